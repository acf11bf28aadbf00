"""Cached Airflow 3 views against a real Airflow 3.3 api-server on PostgreSQL, with real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy.app import CACHE
from tests.airflow.harness import AirflowInstance
from tests.integration.conftest import CacheStarter

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

StartCache = CacheStarter


def canonical(body: bytes) -> object:
    """Airflow 3.3 is not byte-stable: ``last_parsed`` moves per request, set-ordered lists differ per worker,
    and an unfinished run's ``duration`` is computed from the clock (AIRFLOW3-FACTS.md §4)."""

    def walk(value: object) -> object:
        if isinstance(value, dict):
            unfinished = value.get("state") in ("running", "queued")
            return {
                k: walk(v)
                for k, v in value.items()
                if k != "last_parsed" and not (unfinished and k == "duration")
            }
        if isinstance(value, list):
            items = [walk(v) for v in value]
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
        return value

    return walk(_ndjson_or_json(body))


async def get(
    client: aiohttp.ClientSession, url: str, token: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.get(url, headers={"Authorization": f"Bearer {token}", **headers}) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


CACHED = [
    "/api/v2/dags?limit=50",
    "/ui/dags?dag_runs_limit=14&limit=50&offset=0&tags_match_mode=any&exclude_stale=true&order_by=dag_display_name",
    "/api/v2/dags/big_dag",
    "/api/v2/dags/big_dag/details",
    "/api/v2/dags/big_dag/tasks",
    "/api/v2/dagSources/small_000",
    "/ui/structure/structure_data?dag_id=big_dag&external_dependencies=false",
    "/ui/grid/structure/big_dag?include_upstream=false&include_downstream=false&limit=10&order_by=-run_after",
    "/ui/grid/runs/big_dag?limit=10&order_by=-run_after",
    "/api/v2/dags/big_dag/dagRuns?limit=10",
    "/api/v2/dagTags?limit=10&offset=0&order_by=name&tag_name_prefix_pattern=",
    "/api/v2/importErrors?limit=1",
    "/ui/dashboard/dag_stats",
    "/api/v2/dags/small_000/dagVersions",
]


RUN_VIEWS = [
    "/ui/grid/ti_summaries/small_003?run_ids={run}",
    "/ui/gantt/small_003/{run}",
    "/ui/calendar/small_003",
    "/ui/dags/small_003/latest_run",
    "/api/v2/dags/small_003/dagRuns/{run}",
    "/api/v2/dags/small_003/dagRuns/{run}/taskInstances?limit=50",
    "/api/v2/dags/small_003/dagRuns/{run}/taskInstances/start",
]


@pytest.fixture(scope="module")
def finished_run(airflow3: AirflowInstance) -> str:
    return airflow3.create_runs("small_003", ["success"])[0]


@pytest.mark.parametrize("template", RUN_VIEWS)
async def test_run_views_hit_with_the_direct_body(start_cache: StartCache, airflow3: AirflowInstance,
                                                  finished_run: str, template: str):
    from urllib.parse import quote

    await check_hit_and_parity(start_cache, airflow3, template.format(run=quote(finished_run, safe="")))


# The rest of the cached routes: warnings, single task and version, deadline alerts, run stats, and the task
# instance family including the mapped task of big_dag (process_partition, 4 map indexes) and tries.
MORE_VIEWS = [
    "/api/v2/dagWarnings?limit=50",
    "/api/v2/dags/big_dag/tasks/start",
    "/api/v2/dags/small_000/dagVersions/1",
    "/ui/dags/big_dag/deadlineAlerts",
    "/ui/dags/big_dag/dagRuns/{run}/stats",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/process_partition/listMapped?limit=10",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/process_partition/2",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/start/tries",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/start/tries/{try}",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/process_partition/2/tries",
    "/api/v2/dags/big_dag/dagRuns/{run}/taskInstances/process_partition/2/tries/{try}",
]


@pytest.fixture(scope="module")
def big_run(airflow3: AirflowInstance) -> tuple[str, int]:
    """A finished big_dag run and the try number its task instances ended with."""
    from urllib.parse import quote

    run = airflow3.create_runs("big_dag", ["success"])[0]
    answer = airflow3.request(
        "GET", f"/api/v2/dags/big_dag/dagRuns/{quote(run, safe='')}/taskInstances/start/tries", user="admin"
    )
    tries = json.loads(answer.body)["task_instances"]
    assert tries, "a finished task instance has at least one try"
    return quote(run, safe=""), int(tries[-1]["try_number"])


@pytest.mark.parametrize("template", MORE_VIEWS)
async def test_remaining_cached_views_hit_with_the_direct_body(
    start_cache: StartCache, airflow3: AirflowInstance, big_run: tuple[str, int], template: str
):
    run, try_number = big_run
    await check_hit_and_parity(start_cache, airflow3, template.replace("{run}", run).replace("{try}", str(try_number)))


@pytest.mark.parametrize("path", CACHED)
async def test_second_request_is_a_hit_with_the_direct_body(start_cache: StartCache, airflow3: AirflowInstance,
                                                           path: str):
    await check_hit_and_parity(start_cache, airflow3, path)


async def check_hit_and_parity(start_cache: StartCache, airflow3: AirflowInstance, path: str) -> None:
    base = await start_cache()
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        status, first_headers, first = await get(client, base + path, token)
        assert status == 200, first[:300]
        assert first_headers["X-Cache"] == "MISS"
        status, headers, second = await get(client, base + path, token)
        assert headers["X-Cache"] == "HIT"
        assert second == first  # one body per version, however unstable Airflow is
        assert headers["ETag"] == first_headers["ETag"]
        assert headers["Cache-Control"] == "no-cache, private"
        direct_status, _, direct = await get(client, airflow3.base_url + path, token)
    assert direct_status == 200
    assert canonical(second) == canonical(direct)


def _ndjson_or_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return [json.loads(line) for line in body.splitlines() if line.strip()]


async def test_if_none_match_gives_304_and_gzip_is_served_precompressed(start_cache: StartCache,
                                                                       airflow3: AirflowInstance):
    base = await start_cache()
    token = airflow3.token("admin")
    url = base + "/api/v2/dags/big_dag/tasks"
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        _, headers, identity = await get(client, url, token, **{"Accept-Encoding": "identity"})
        _, gz_headers, gz = await get(client, url, token, **{"Accept-Encoding": "gzip"})
        status, not_modified, body = await get(client, url, token, **{"If-None-Match": headers["ETag"]})
    assert gz_headers["Content-Encoding"] == "gzip" and gz_headers["Vary"] == "Accept-Encoding"
    import gzip

    assert gzip.decompress(gz) == identity
    assert status == 304 and body == b"" and not_modified["ETag"] == headers["ETag"]


async def test_users_never_share_entries(start_cache: StartCache, airflow3: AirflowInstance):
    base = await start_cache()
    admin, viewer = airflow3.token("admin"), airflow3.token("viewer1")
    path = "/api/v2/dags/big_dag/details"
    async with aiohttp.ClientSession() as client:
        _, a1, _ = await get(client, base + path, admin)
        _, v1, _ = await get(client, base + path, viewer)
        _, a2, _ = await get(client, base + path, admin)
    assert (a1["X-Cache"], v1["X-Cache"], a2["X-Cache"]) == ("MISS", "MISS", "HIT")
    assert a1["ETag"] != v1["ETag"]


async def test_requests_without_credentials_are_never_cached(start_cache: StartCache):
    base = await start_cache()
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.get(base + "/api/v2/dags/big_dag/tasks") as resp:
                assert resp.status == 401
                assert resp.headers["X-Cache"] == "BYPASS"


async def test_revoked_token_is_not_served_from_cache(start_cache: StartCache, airflow3: AirflowInstance):
    base = await start_cache()
    token = airflow3.token("admin", fresh=True)
    path = "/api/v2/dags/big_dag/tasks"
    async with aiohttp.ClientSession() as client:
        await get(client, base + path, token)
        _, headers, _ = await get(client, base + path, token)
        assert headers["X-Cache"] == "HIT"
        async with client.get(base + "/api/v2/auth/logout", headers={"Authorization": f"Bearer {token}"},
                              allow_redirects=False) as resp:
            assert resp.status < 400
        deadline = time.monotonic() + 5
        while True:
            status, headers, _ = await get(client, base + path, token)
            if headers["X-Cache"] == "BYPASS" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert headers["X-Cache"] == "BYPASS"
    assert status in (401, 403)


def _reissued(token: str, exp: float) -> str:
    """The same Airflow JWT with another ``exp``, signed like Airflow signs (HS512 with its jwt_secret)."""
    import base64
    import hashlib
    import hmac

    from tests.airflow.harness import _JWT_SECRET

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(exp)
    signing_input = f"{head}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(_JWT_SECRET.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_a_token_near_or_past_its_expiry_is_never_served_from_cache(
    start_cache: StartCache, airflow3: AirflowInstance
):
    base = await start_cache(cache={"refresh_window": 2.0})
    token = _reissued(airflow3.token("admin", fresh=True), time.time() + 5)
    path = "/api/v2/dags/big_dag/tasks"
    async with aiohttp.ClientSession() as client:
        assert (await get(client, base + path, token))[1]["X-Cache"] == "MISS"
        assert (await get(client, base + path, token))[1]["X-Cache"] == "HIT"  # Airflow accepted the token
        await asyncio.sleep(3.2)  # now inside the refresh window: Airflow must see it (it may refresh the cookie)
        status, headers, _ = await get(client, base + path, token)
        assert (status, headers["X-Cache"]) == (200, "BYPASS")
        await asyncio.sleep(2.0)  # expired; Airflow itself still takes it for [api_auth] jwt_leeway (10 s)
        _, headers, _ = await get(client, base + path, token)
    assert headers["X-Cache"] == "BYPASS"


async def test_definition_change_is_visible_within_poll_interval(start_cache: StartCache, airflow3: AirflowInstance):
    base = await start_cache()
    token = airflow3.token("admin")
    path = "/api/v2/dags/small_002/tasks"
    async with aiohttp.ClientSession() as client:
        _, _, before = await get(client, base + path, token)
        _, headers, _ = await get(client, base + path, token)
        assert headers["X-Cache"] == "HIT"
        airflow3.touch_dag("small_002", 3)
        try:
            await asyncio.to_thread(airflow3.sync_dags, "small_002")
            changed_at = time.monotonic()
            while True:
                _, headers, after = await get(client, base + path, token)
                if after != before or time.monotonic() - changed_at > 5:
                    break
                await asyncio.sleep(0.05)
            took = time.monotonic() - changed_at
        finally:
            airflow3.touch_dag("small_002", 0)
            await asyncio.to_thread(airflow3.sync_dags, "small_002")
    assert after != before
    assert took < 0.2 + 1.0
    assert len(json.loads(after)["tasks"]) > len(json.loads(before)["tasks"])


async def test_concurrent_misses_make_one_upstream_request(start_cache: StartCache, airflow3: AirflowInstance):
    bases = [await start_cache(prefix="sf-shared"), await start_cache(prefix="sf-shared")]
    token = airflow3.token("admin")
    path = "/ui/structure/structure_data?dag_id=big_dag&external_dependencies=false&depth=1"
    async with aiohttp.ClientSession() as client:
        results = await asyncio.gather(*(get(client, bases[i % 2] + path, token) for i in range(50)))
    assert all(status == 200 for status, _, _ in results), [(s, h.get("X-Cache"), b[:100]) for s, h, b in results]
    assert len({body for _, _, body in results}) == 1
    # 50 concurrent misses over two proxy instances: exactly one request reached Airflow.
    assert sum(app[CACHE].counters.upstream_fetches for app in start_cache.apps) == 1


async def test_redis_outage_never_fails_a_request(start_cache: StartCache, airflow3: AirflowInstance):
    from tests.servers import RedisProcess

    token = airflow3.token("admin")
    paths = ["/api/v2/dags/big_dag/tasks", "/api/v2/dags/small_000", "/ui/grid/runs/small_001?limit=10"]
    with RedisProcess() as private:
        base = await start_cache(redis={"url": private.url, "key_prefix": "outage"})
        async with aiohttp.ClientSession() as client:
            for path in paths:
                await get(client, base + path, token)
            private.stop()
            outcomes = []
            for _ in range(3):
                for path in paths + ["/api/v2/dags/small_001/tasks"]:  # one never cached before the outage
                    status, headers, _ = await get(client, base + path, token)
                    assert status == 200
                    outcomes.append(headers["X-Cache"])
            private.start()
    # Entries already in the process stay servable (content-addressed, so L1 can never disagree with Redis);
    # the view never cached before is fetched from Airflow; no request failed.
    assert outcomes[:3] == ["HIT", "HIT", "HIT"]
    assert outcomes[3] in ("MISS", "BYPASS")


async def test_embedded_store_without_redis(start_cache: StartCache, airflow3: AirflowInstance):
    """A laptop without Redis: the process polls the DB itself and caches in memory."""
    base = await start_cache(redis={"url": ""})
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        outcomes = [(await get(client, base + "/api/v2/dags/small_000/tasks", token))[1]["X-Cache"] for _ in range(3)]
    assert outcomes == ["MISS", "HIT", "HIT"]


async def test_pollers_never_see_an_older_view_while_dags_and_runs_change(
    start_cache: StartCache, airflow3: AirflowInstance
):
    """Many clients, two proxy instances sharing one fleet: while the DAG's definition changes twice and runs
    are added, no client ever gets a view older than one it already saw."""
    bases = [await start_cache(prefix="monotonic"), await start_cache(prefix="monotonic")]
    token = airflow3.token("admin")
    tasks_path, runs_path = "/api/v2/dags/small_004/tasks", "/ui/grid/runs/small_004?limit=50&order_by=-run_after"
    regressions: list[str] = []
    seen_tasks: list[int] = []
    stop = asyncio.Event()

    async def poller(index: int) -> None:
        best_tasks = best_runs = 0
        async with aiohttp.ClientSession() as client:
            while not stop.is_set():
                base = bases[(index + len(seen_tasks)) % 2]
                _, _, body = await get(client, base + tasks_path, token)
                count = len(json.loads(body)["tasks"])
                if count < best_tasks:
                    regressions.append(f"client {index}: {best_tasks} tasks, then {count}")
                best_tasks = max(best_tasks, count)
                seen_tasks.append(count)
                _, _, body = await get(client, base + runs_path, token)
                runs = len(json.loads(body))
                if runs < best_runs:
                    regressions.append(f"client {index}: {best_runs} runs, then {runs}")
                best_runs = max(best_runs, runs)

    pollers = [asyncio.ensure_future(poller(i)) for i in range(6)]
    try:
        for variant in (1, 2):
            airflow3.touch_dag("small_004", variant)
            await asyncio.to_thread(airflow3.sync_dags, "small_004")
            await asyncio.to_thread(airflow3.create_runs, "small_004", ["success"])
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*pollers)
        airflow3.touch_dag("small_004", 0)
        await asyncio.to_thread(airflow3.sync_dags, "small_004")
    assert regressions == []
    assert max(seen_tasks) > min(seen_tasks)  # the change was seen through the proxy


async def test_write_through_the_proxy_is_read_back_at_once(start_cache: StartCache, airflow3: AirflowInstance):
    """Read-your-writes: a pause through the proxy bumps the DAG's versions before the next read."""
    base = await start_cache(versions={"poll_interval": 30.0, "lease_ttl": 60.0, "max_version_age": 120.0})
    token = airflow3.token("admin")
    url = base + "/api/v2/dags/small_005"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        states = []
        for paused in (False, True):
            await get(client, url, token)
            _, cached, _ = await get(client, url, token)
            assert cached["X-Cache"] == "HIT"
            async with client.patch(url, json={"is_paused": paused}, headers=headers) as resp:
                assert resp.status == 200
            _, after, body = await get(client, url, token)
            states.append((after["X-Cache"], json.loads(body)["is_paused"]))
    # With a 30 s poll interval only the bump can explain a fresh answer.
    assert states == [("MISS", False), ("MISS", True)]

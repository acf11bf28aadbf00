"""``/metrics``, ``/readyz`` and the access log of a running proxy: the counters equal the request mix that
went through it, probes flip when the upstream or the versions go away, ``--workers 2`` aggregates."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import REPO, UpstreamServer, dagcache_cmd
from tests.functional.observability import Stack, airflow_db, bearer, scrape, table, until
from tests.servers import RedisProcess, free_port, wait_port
from tests.upstream_app import make_upstream_app

pytestmark = pytest.mark.functional

DAG = "/api/v2/dags/dag_a"
TASKS = "/api/v2/dags/dag_a/tasks"
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
async def stacks() -> AsyncIterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        await stack.aclose()


async def _start(stacks: list[Stack], **sections: dict[str, object]) -> Stack:
    stack = Stack()
    stacks.append(stack)
    return await stack.start(**sections)


def _cached(upstream: str, redis: str, db: str, prefix: str, **versions: float) -> dict[str, dict[str, object]]:
    return {
        "upstream": {"url": upstream},
        "database": {"url": db},
        "redis": {"url": redis, "key_prefix": prefix},
        "versions": {"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0, **versions},
    }


async def _get(client: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, bytes, str]:
    async with client.get(url, headers={**bearer(), **IDENTITY, **headers}) as resp:
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read(), resp.headers.get("ETag", "")


async def test_counters_equal_the_request_mix(
    stacks: list[Stack], upstream: UpstreamServer, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "proxy.access")
    db = airflow_db(tmp_path, "dag_a", "dag_b")
    stack = await _start(stacks, **_cached(upstream.url, redis_url, db, f"obs{os.getpid()}mix"))
    async with aiohttp.ClientSession() as client:
        assert (await _get(client, stack.base + DAG))[1] == "MISS"
        status, cache, dag_body, etag = await _get(client, stack.base + DAG)
        assert (status, cache) == (200, "HIT")
        assert (await _get(client, stack.base + DAG))[1] == "HIT"
        assert (await _get(client, stack.base + DAG, **{"If-None-Match": etag}))[0] == 304
        assert (await _get(client, stack.base + TASKS))[1] == "MISS"
        _, cache, tasks_body, _ = await _get(client, stack.base + TASKS)
        assert cache == "HIT"
        assert (await _get(client, stack.base + DAG + "?unknown=1"))[1] == "BYPASS"
        assert (await _get(client, stack.base + "/status/404"))[0] == 404
        async with client.post(stack.base + DAG + "/clearTaskInstances", json={}, headers=bearer()) as resp:
            assert resp.status == 200

        async def all_counted() -> bool:  # a streamed answer is counted once its handler returns
            return (await scrape(client, stack.admin)).total("dagcache_requests_total") == 9

        await until(all_counted)
        samples = await scrape(client, stack.admin)
        assert table(samples, "dagcache_requests_total", "route", "outcome", "status") == {
            ("api.dag", "MISS", "200"): 1,
            ("api.dag", "HIT", "200"): 2,
            ("api.dag", "304", "304"): 1,
            ("api.dag.tasks", "MISS", "200"): 1,
            ("api.dag.tasks", "HIT", "200"): 1,
            ("api.dag", "BYPASS", "200"): 1,
            ("other", "BYPASS", "404"): 1,
            ("passthrough", "BYPASS", "200"): 1,
        }
        assert table(samples, "dagcache_upstream_requests_total", "route", "status") == {
            ("api.dag", "200"): 2,  # the fill and the bypass (unknown parameter)
            ("api.dag.tasks", "200"): 1,
            ("other", "404"): 1,
            ("passthrough", "200"): 1,
        }
        assert table(samples, "dagcache_request_seconds_count", "route", "outcome")[("api.dag", "HIT")] == 2
        assert samples.total("dagcache_cache_served_bytes_total") == 2 * len(dag_body) + len(tasks_body)
        assert table(samples, "dagcache_redis_seconds_count", "op")[("put",)] == 2
        assert samples.total("dagcache_redis_errors_total") == 0
        # Both MISSes fetched their fill themselves (no other request was filling the key).
        assert table(samples, "dagcache_fill_seconds_count", "outcome") == {("filled",): 2}

        async def sampled() -> bool:
            s = await scrape(client, stack.admin)
            return s.value("dagcache_l1_entries") == 2

        await until(sampled)  # state copied from the cache layer, L1 and versions about once a second
        samples = await scrape(client, stack.admin)
        assert samples.value("dagcache_version_dags") == 2
        assert samples.value("dagcache_version_leader") == 1
        assert samples.total("dagcache_version_polls_total", result="ok") >= 1
        assert samples.value("dagcache_redis_breaker_open") == 0
        assert samples.value("dagcache_l1_bytes") or 0 > 0

    lines = [r for r in caplog.records if r.name == "proxy.access"]
    hit = next(r for r in lines if getattr(r, "outcome", None) == "HIT")
    assert (hit.route, hit.status, hit.key) == ("api.dag", 200, etag.strip('"'))  # type: ignore[attr-defined]
    assert {getattr(r, "outcome", None) for r in lines} >= {"MISS", "HIT", "304", "BYPASS"}
    token = bearer()["Authorization"].split()[1]
    assert all(token not in json.dumps(r.__dict__, default=str) for r in lines)


async def test_readyz_flips_when_the_upstream_stops(stacks: list[Stack], tmp_path: Path, redis_url: str) -> None:
    runner = web.AppRunner(make_upstream_app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    db = airflow_db(tmp_path, "dag_a")
    stack = await _start(stacks, **_cached(f"http://127.0.0.1:{port}", redis_url, db, f"obs{os.getpid()}up"))
    async with aiohttp.ClientSession() as client:

        async def ready() -> bool:
            async with client.get(stack.admin + "/readyz") as resp:
                body = await resp.json()
                return resp.status == 200 and body["mode"] == "cache" and body["versions"].startswith("versions fresh")

        await until(ready)  # once the versions reach the metrics (sampled about once a second)
        await runner.cleanup()
        async with client.get(stack.admin + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503
            assert body["upstream"].startswith("upstream unreachable")
        async with client.get(stack.admin + "/healthz") as resp:
            assert resp.status == 200  # liveness never depends on the upstream


@pytest.mark.parametrize("required", [False, True])
async def test_readyz_flips_when_redis_stops_and_recovers(
    stacks: list[Stack], upstream: UpstreamServer, tmp_path: Path, required: bool
) -> None:
    """By default stale versions are declared (pass-through mode) and the replica stays ready: it still
    serves. With ``ready_requires_versions`` the probe fails until Redis is back."""
    db = airflow_db(tmp_path, "dag_a")
    with RedisProcess() as redis:
        sections = _cached(upstream.url, redis.url, db, "obs", max_version_age=1.5)
        stack = await _start(stacks, **sections, admin={"ready_requires_versions": required})
        async with aiohttp.ClientSession() as client:

            async def ready() -> bool:
                async with client.get(stack.admin + "/readyz") as resp:
                    return resp.status == 200 and (await resp.json())["mode"] == "cache"

            await until(ready)
            redis.stop()  # no leader can publish: the versions held age past max_version_age

            async def stale() -> bool:
                async with client.get(stack.admin + "/readyz") as resp:
                    body = await resp.json()
                    return (
                        resp.status == (503 if required else 200)
                        and body["mode"] == "pass-through"
                        and body["versions"].startswith("versions stale")
                    )

            await until(stale)
            status, outcome, _, _ = await _get(client, stack.base + DAG)
            assert (status, outcome) == (200, "BYPASS")  # still serving, by passing through
            redis.start()
            await until(ready, timeout=30)


async def test_readyz_declares_pass_through_mode(stacks: list[Stack], upstream: UpstreamServer) -> None:
    stack = await _start(stacks, upstream={"url": upstream.url})
    async with aiohttp.ClientSession() as client, client.get(stack.admin + "/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["mode"] == "pass-through"
    assert body["versions"] == "not needed (pass-through mode: no [database] url)"


# -- --workers 2: the supervisor's /metrics sums every worker ------------------------------------------


def _config(tmp_path: Path, upstream: str) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = 2\nshutdown_grace = 5\n'
        f'[upstream]\nurl = "{upstream}"\n'
        f'[admin]\nhost = "127.0.0.1"\nport = {admin}\nreadiness_cache = 0\n'
        '[log]\nformat = "json"\n'
    )
    return path, port, admin


class Workers:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, admin: int, log: Path) -> None:
        self.proc, self.port, self.admin, self.log = proc, port, admin, log

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 20)


@pytest.fixture
def two_workers(upstream: UpstreamServer, tmp_path: Path) -> Iterator[Workers]:
    config, port, admin = _config(tmp_path, upstream.url)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dagcache_cmd("serve", "--config", str(config)),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_port(port, 30)
        wait_port(admin, 30)
        yield Workers(proc, port, admin, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_two_workers_are_aggregated_and_a_dead_one_is_dropped(two_workers: Workers) -> None:
    requests = 40
    admin_url = f"http://127.0.0.1:{two_workers.admin}"
    # A new connection per request: the kernel (SO_REUSEPORT) spreads them over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:

        async def both_reporting() -> bool:  # each worker binds its socket before it reports
            return len((await scrape(client, admin_url)).by_name.get("dagcache_process_up", [])) == 2

        await until(both_reporting, timeout=30)
        for i in range(requests):
            async with client.get(f"http://127.0.0.1:{two_workers.port}/api/v2/dags/dag_{i}") as resp:
                assert resp.status == 200

        async def all_counted() -> bool:
            return (await scrape(client, admin_url)).total("dagcache_requests_total") == requests

        await until(all_counted)

        async def all_logged() -> bool:  # access lines are written in batches, at most 0.1 s after the request
            return sum(_workers_in_access_log(two_workers.log).values()) == requests

        await until(all_logged)
        samples = await scrape(client, admin_url)
        served_by = _workers_in_access_log(two_workers.log)
        assert len(served_by) == 2, served_by  # both workers served some of the requests ...
        assert samples.total("dagcache_requests_total") == requests  # ... and /metrics counts them all
        assert samples.total("dagcache_upstream_requests_total", route="api.dag") == requests
        pids = sorted(int(labels["pid"]) for labels, _ in samples.by_name["dagcache_process_up"])
        metrics_dir = _metrics_dir_of(pids[1])
        assert metrics_dir.is_dir()

        os.kill(pids[0], signal.SIGKILL)  # the supervisor restarts it and drops its live gauges

        async def replaced() -> bool:
            ups = (await scrape(client, admin_url)).by_name.get("dagcache_process_up", [])
            return len(ups) == 2 and pids[0] not in {int(labels["pid"]) for labels, _ in ups}

        await until(replaced, timeout=30)
        # The dead worker's requests still count: counters survive their process.
        assert (await scrape(client, admin_url)).total("dagcache_requests_total") == requests
        async with client.get(admin_url + "/status.json") as resp:
            status = await resp.json()
        assert status["requests"] == requests
        assert status["process"]["serving processes"] == 2
    assert await two_workers.stop() == 0, two_workers.log.read_text()[-2000:]
    assert not metrics_dir.exists()  # removed at exit


def _workers_in_access_log(log: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "proxy.access" and "worker" in record:
            counts[record["worker"]] = counts.get(record["worker"], 0) + 1
    return counts


def _metrics_dir_of(pid: int) -> Path:
    """The private metrics directory a worker was spawned with (from its environment)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(item for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
    return Path(value.split(b"=", 1)[1].decode())


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.lines.extend(data.decode().splitlines())


async def test_statsd_receives_the_counters(stacks: list[Stack], upstream: UpstreamServer) -> None:
    received = _Datagrams()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: received, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        stack = await _start(
            stacks, upstream={"url": upstream.url}, metrics={"statsd": f"127.0.0.1:{port}", "statsd_interval": 1}
        )
        async with aiohttp.ClientSession() as client:
            for _ in range(3):
                async with client.get(stack.base + DAG) as resp:
                    assert resp.status == 200

        async def counted() -> bool:
            total = 0
            for line in received.lines:
                name, _, rest = line.partition(":")
                if name == "dagcache.requests" and rest.endswith("|#outcome:BYPASS,route:api_dag,status:200"):
                    total += int(rest.split("|")[0])
            return total == 3

        await until(counted)
        assert any(line.startswith("dagcache.process_up:1|g") for line in received.lines)
    finally:
        transport.close()


async def test_shadow_mode_counts_what_the_cache_would_have_answered(
    stacks: list[Stack], upstream: UpstreamServer, redis_url: str, tmp_path: Path
) -> None:
    db = airflow_db(tmp_path, "dag_a")
    sections = _cached(upstream.url, redis_url, db, f"obs{os.getpid()}shadow")
    stack = await _start(stacks, cache={"mode": "shadow"}, **sections)
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            assert (await _get(client, stack.base + DAG))[1] == "SHADOW"

        async def all_counted() -> bool:  # a streamed answer is counted once its handler returns
            return (await scrape(client, stack.admin)).total("dagcache_requests_total") == 3

        await until(all_counted)
        samples = await scrape(client, stack.admin)
        async with client.get(stack.admin + "/status.json") as resp:
            status = await resp.json()
    assert table(samples, "dagcache_requests_total", "route", "outcome", "status") == {("api.dag", "SHADOW", "200"): 3}
    assert table(samples, "dagcache_shadow_total", "would") == {("MISS",): 1, ("HIT",): 2}
    assert status["shadow"] == {"HIT": 2, "MISS": 1, "would_be_hit_ratio": pytest.approx(2 / 3, abs=1e-4)}


def test_a_worker_whose_supervisor_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    """A worker spawned just before its supervisor was killed must not serve on as init's child (it would keep
    its port and its metrics files forever)."""
    config, _, _ = _config(tmp_path, "http://127.0.0.1:1")
    code = (
        "from proxy.config import load_config; from proxy.supervisor import worker_main; "
        f"worker_main(load_config({str(config)!r}), 0, supervisor=2**22 + 1)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "the supervisor (pid 4194305) is gone; this worker stops" in proc.stderr

"""Operator switches of the cache against a real Airflow 3.3 api-server, real PostgreSQL and real Redis:
shadow mode, the admin bypass header, ``stale_if_error`` and ``serve_stale``. Failures are injected with a
TCP relay between dagcache and Airflow (or its DB); Airflow itself is never stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from proxy.app import CACHE, VERSIONS
from tests.airflow.harness import AirflowInstance
from tests.integration.conftest import CacheStarter
from tests.integration.test_cache_airflow3 import canonical, get
from tests.relay import TcpRelay

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

# `details` embeds last_parsed, which Airflow 3.3 recomputes on every request (AIRFLOW3-FACTS.md §4): two
# answers from Airflow differ, two answers from one cache entry do not.
DETAILS = "/api/v2/dags/small_001/details"


async def _relay_to(url: str, default_port: int) -> TcpRelay:
    parts = urlsplit(url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or default_port)
    await relay.start()
    return relay


@pytest.fixture
async def airflow_relay(airflow3: AirflowInstance) -> AsyncIterator[TcpRelay]:
    relay = await _relay_to(airflow3.base_url, 80)
    yield relay
    await relay.aclose()


@pytest.fixture
async def db_relay(airflow3: AirflowInstance) -> AsyncIterator[TcpRelay]:
    relay = await _relay_to(airflow3.db_url, 5432)
    yield relay
    await relay.aclose()


def through(relay: TcpRelay, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{relay.port}")).geturl()


async def test_shadow_mode_answers_from_airflow_and_reports_would_be_hits(
    start_cache: CacheStarter, airflow3: AirflowInstance
):
    shadow = await start_cache(cache={"mode": "shadow"})
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        first = await get(client, shadow + DETAILS, token)
        second = await get(client, shadow + DETAILS, token)
        assert [first[0], second[0]] == [200, 200]
        assert [first[1]["X-Cache"], second[1]["X-Cache"]] == ["SHADOW", "SHADOW"]
        assert [first[1]["X-Dagcache-Shadow"], second[1]["X-Dagcache-Shadow"]] == ["MISS", "HIT"]
        assert first[2] != second[2], "both answers must come from Airflow (last_parsed differs per request)"
        assert canonical(first[2]) == canonical(second[2])
        counters = start_cache.apps[0][CACHE].counters
        assert (counters.shadow_hits, counters.shadow_misses, counters.hits) == (1, 1, 0)

        # What shadow mode filled is what "on" serves: switching over starts warm.
        live = await start_cache(cache={"mode": "on"})
        status, headers, body = await get(client, live + DETAILS, token)
        assert (status, headers["X-Cache"]) == (200, "HIT")
        assert canonical(body) == canonical(first[2])


async def test_bypass_header_needs_the_admin_token(start_cache: CacheStarter, airflow3: AirflowInstance):
    base = await start_cache(admin={"token": "op-s3cret"})
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        _, _, stored = await get(client, base + DETAILS, token)
        status, headers, body = await get(client, base + DETAILS, token, **{"X-Dagcache-Bypass": "op-s3cret"})
        assert (status, headers["X-Cache"]) == (200, "BYPASS")
        assert body != stored, "a bypassed request is answered by Airflow, not by the entry"
        status, headers, body = await get(client, base + DETAILS, token, **{"X-Dagcache-Bypass": "guess"})
        assert (headers["X-Cache"], body) == ("HIT", stored)
        # The bypass did not replace the entry.
        assert (await get(client, base + DETAILS, token))[2] == stored

    without_token = await start_cache(prefix="no-admin-token")
    async with aiohttp.ClientSession() as client:
        await get(client, without_token + DETAILS, token)
        _, headers, _ = await get(client, without_token + DETAILS, token, **{"X-Dagcache-Bypass": ""})
        assert headers["X-Cache"] == "HIT"


@pytest.mark.parametrize("failure", ["down", "http503"])
async def test_stale_if_error_serves_the_last_good_entry_when_airflow_fails(
    start_cache: CacheStarter, airflow3: AirflowInstance, airflow_relay: TcpRelay, failure: str
):
    dag = "small_006" if failure == "down" else "small_007"
    view = f"/ui/grid/runs/{dag}?limit=10&order_by=-run_after"
    relayed = through(airflow_relay, airflow3.base_url)
    stale_ok = await start_cache(upstream_url=relayed, cache={"stale_if_error": True})
    strict = await start_cache(upstream_url=relayed, prefix=f"strict-{failure}")
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        status, headers, good = await get(client, stale_ok + view, token)
        assert (status, headers["X-Cache"]) == (200, "MISS")
        await get(client, strict + view, token)
        # New runs: the view's key moves on, so the next request is a miss that must go to Airflow.
        before = _generations(start_cache)
        await asyncio.to_thread(airflow3.create_runs, dag, ["success"])
        await _wait_generations_pass(start_cache, before)
        await airflow_relay.set_mode(failure)  # type: ignore[arg-type]

        status, headers, body = await get(client, stale_ok + view, token)
        assert (status, headers["X-Cache"], body) == (200, "STALE", good)
        status, headers, _ = await get(client, strict + view, token)
        assert status == (502 if failure == "down" else 503)
        assert headers.get("X-Cache") in (None, "MISS")

        await airflow_relay.set_mode("up")
        status, headers, fresh = await get(client, stale_ok + view, token)
        assert (status, headers["X-Cache"]) == (200, "MISS")
        assert fresh != good, "once Airflow answers again, the new run shows"


async def test_serve_stale_answers_stored_views_while_versions_cannot_be_polled(
    start_cache: CacheStarter, airflow3: AirflowInstance, db_relay: TcpRelay
):
    versions = {"poll_interval": 0.2, "lease_ttl": 2.0, "max_version_age": 1.0}
    db = through(db_relay, airflow3.db_url)
    lenient = await start_cache(database_url=db, versions=versions, cache={"serve_stale": True})
    strict = await start_cache(database_url=db, versions=versions, prefix="strict-stale")
    token = airflow3.token("admin")
    async with aiohttp.ClientSession() as client:
        _, _, stored = await get(client, lenient + DETAILS, token)
        await get(client, strict + DETAILS, token)
        await db_relay.set_mode("down")
        await asyncio.sleep(1.6)  # past max_version_age without a successful poll

        status, headers, body = await get(client, lenient + DETAILS, token)
        assert (status, headers["X-Cache"], body) == (200, "STALE", stored)
        never_stored = "/api/v2/dags/small_002/details"
        status, headers, _ = await get(client, lenient + never_stored, token)
        assert (status, headers["X-Cache"]) == (200, "BYPASS")
        status, headers, body = await get(client, strict + DETAILS, token)
        assert (status, headers["X-Cache"]) == (200, "BYPASS")
        assert body != stored

        await db_relay.set_mode("up")
        async with asyncio.timeout(15):
            while (await get(client, lenient + DETAILS, token))[1]["X-Cache"] != "HIT":
                await asyncio.sleep(0.2)


def _generations(starter: CacheStarter) -> list[int]:
    return [current.generation if (current := app[VERSIONS].current) else 0 for app in starter.apps]


async def _wait_generations_pass(starter: CacheStarter, before: list[int]) -> None:
    """Wait until every proxy's version map is newer than ``before`` (a poll saw the change)."""
    async with asyncio.timeout(15):
        while any(now <= then for now, then in zip(_generations(starter), before, strict=True)):
            await asyncio.sleep(0.1)

"""Metrics, probes and the status page of dagcache in front of a real Airflow 3.3 api-server (PostgreSQL, Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.admin import start_admin
from proxy.app import SETTINGS, TELEMETRY
from proxy.config import AdminConfig
from proxy.status import Samples
from tests.airflow.harness import AirflowInstance
from tests.functional.observability import until
from tests.integration.conftest import CacheStarter
from tests.relay import TcpRelay
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

# (path, requests): the first request of a cached view is a MISS, the others HITs.
MIX = [
    ("/api/v2/dags/big_dag", 3),
    ("/api/v2/dags/big_dag/tasks", 2),
    ("/ui/dashboard/dag_stats", 2),
    ("/api/v2/monitor/health", 2),  # never cached: BYPASS, each one upstream
]
ROUTES = {
    "/api/v2/dags/big_dag": "api.dag",
    "/api/v2/dags/big_dag/tasks": "api.dag.tasks",
    "/ui/dashboard/dag_stats": "ui.dashboard.dag_stats",
    "/api/v2/monitor/health": "api.monitor.health",
}


def counts(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    rows: dict[tuple[str, ...], float] = {}
    for sample_labels, value in samples.by_name.get(name, []):
        key = tuple(sample_labels[label] for label in labels)
        rows[key] = rows.get(key, 0.0) + value
    return rows


def delta(after: dict[tuple[str, ...], float], before: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], int]:
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0)}


async def test_metrics_count_a_real_request_mix(start_cache: CacheStarter, airflow3: AirflowInstance) -> None:
    base = await start_cache()
    app = start_cache.apps[-1]
    admin_port = free_port()
    settings = app[SETTINGS].model_copy(update={"admin": AdminConfig(host="127.0.0.1", port=admin_port)})
    admin = await start_admin(settings, registry=app[TELEMETRY].registry)
    admin_url = f"http://127.0.0.1:{admin_port}"
    token = airflow3.token("admin")
    try:
        async with aiohttp.ClientSession() as client:

            async def scrape() -> Samples:
                async with client.get(admin_url + "/metrics") as resp:
                    return Samples.of(text_string_to_metric_families(await resp.text()))

            # The process's telemetry may hold earlier tests' requests: compare before and after.
            before = await scrape()
            for path, times in MIX:
                for _ in range(times):
                    async with client.get(base + path, headers={"Authorization": f"Bearer {token}"}) as resp:
                        assert resp.status == 200, await resp.text()
            after = await scrape()

            async def ready() -> bool:  # versions reach the metrics about once a second
                async with client.get(admin_url + "/readyz") as resp:
                    probe.update(await resp.json())
                    return resp.status == 200 and probe["mode"] == "cache"

            probe: dict[str, str] = {}
            await until(ready)
            async with client.get(admin_url + "/status.json") as resp:
                status = await resp.json()
    finally:
        await admin.cleanup()

    assert probe["mode"] == "cache" and probe["upstream"].startswith("upstream answered HTTP")
    requests = ("route", "outcome", "status")
    assert delta(
        counts(after, "dagcache_requests_total", *requests), counts(before, "dagcache_requests_total", *requests)
    ) == {
        ("api.dag", "MISS", "200"): 1,
        ("api.dag", "HIT", "200"): 2,
        ("api.dag.tasks", "MISS", "200"): 1,
        ("api.dag.tasks", "HIT", "200"): 1,
        ("ui.dashboard.dag_stats", "MISS", "200"): 1,
        ("ui.dashboard.dag_stats", "HIT", "200"): 1,
        ("api.monitor.health", "BYPASS", "200"): 2,
    }
    upstream = ("route", "status")
    assert delta(
        counts(after, "dagcache_upstream_requests_total", *upstream),
        counts(before, "dagcache_upstream_requests_total", *upstream),
    ) == {
        ("api.dag", "200"): 1,
        ("api.dag.tasks", "200"): 1,
        ("ui.dashboard.dag_stats", "200"): 1,
        ("api.monitor.health", "200"): 2,
    }
    assert after.total("dagcache_cache_served_bytes_total") > before.total("dagcache_cache_served_bytes_total")
    assert {row["route"] for row in status["routes"]} >= set(ROUTES.values())
    assert status["versions"]["dags"] > 1 and status["redis"]["state"] == "reachable"
    assert status["hit_ratio"] is not None


async def _relay(url: str, default_port: int) -> TcpRelay:
    parts = urlsplit(url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or default_port)
    await relay.start()
    return relay


def _through(relay: TcpRelay, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{relay.port}")).geturl()


@pytest.fixture
async def relays(airflow3: AirflowInstance) -> AsyncIterator[tuple[TcpRelay, TcpRelay]]:
    """(api-server relay, metadata DB relay): failures are injected there; Airflow itself is never stopped."""
    api, db = await _relay(airflow3.base_url, 80), await _relay(airflow3.db_url, 5432)
    yield api, db
    await api.aclose()
    await db.aclose()


async def test_readyz_flips_when_airflow_or_its_db_goes_away(
    start_cache: CacheStarter, airflow3: AirflowInstance, relays: tuple[TcpRelay, TcpRelay]
) -> None:
    api, db = relays
    await start_cache(
        upstream_url=_through(api, airflow3.base_url),
        database_url=_through(db, airflow3.db_url),
        versions={"max_version_age": 2.0},
        admin={"ready_requires_versions": True},
    )
    app = start_cache.apps[-1]
    admin_port = free_port()
    admin_config = AdminConfig(host="127.0.0.1", port=admin_port, readiness_cache=0, ready_requires_versions=True)
    admin = await start_admin(
        app[SETTINGS].model_copy(update={"admin": admin_config}), registry=app[TELEMETRY].registry
    )
    probe: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as client:

            async def readyz(expected: int) -> bool:
                async with client.get(f"http://127.0.0.1:{admin_port}/readyz") as resp:
                    probe.clear()
                    probe.update(await resp.json())
                    return resp.status == expected

            async def ready() -> bool:
                return await readyz(200)

            async def not_ready() -> bool:
                return await readyz(503)

            await until(ready)
            await api.set_mode("down")  # the api-server stops answering
            await until(not_ready)
            assert probe["upstream"].startswith("upstream unreachable"), probe
            await api.set_mode("up")
            await until(ready)

            await db.set_mode("down")  # the leader's polls fail: the versions held age past max_version_age
            await until(not_ready)
            assert probe["versions"].startswith("versions stale"), probe
            assert probe["upstream"].startswith("upstream answered HTTP"), probe
            await db.set_mode("up")
            await until(ready, timeout=30)
    finally:
        await admin.cleanup()

"""The whole proxy (versions leader, cache, fill notifications) over a real Redis Sentinel and a real 3-master
Redis Cluster, in front of the stand-in upstream.

The metadata DB is a SQLite file with the Airflow 3 tables exactly as dagcache reads them
(``proxy.airflow.schema``), so the real SQL version source runs; the upstream echoes each request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine, insert

from proxy.airflow import schema
from proxy.app import VERSIONS, create_app, make_redis
from proxy.config import RedisConfig
from proxy.server import bind_socket, make_runner
from proxy.versions.redis_store import RedisVersionStore
from tests.conftest import REPO, UpstreamServer, make_settings
from tests.servers import _cli, free_port, redis_cluster, redis_sentinel, sentinel_master

pytestmark = pytest.mark.functional

DAG_PATH = "/api/v2/dags/topology_dag"


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    with redis_sentinel() as url:
        yield url


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with redis_cluster() as url:
        yield url


@pytest.fixture(params=["sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def airflow_db(tmp_path: Path) -> str:
    """An Airflow-3-shaped metadata DB with one DAG."""
    path = tmp_path / "airflow.db"
    engine = create_engine(f"sqlite:///{path}")
    schema.COMMON.create_all(engine)
    schema.AIRFLOW3.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(schema.alembic_version).values(version_num="topology-test"))
        conn.execute(insert(schema.dag3).values(dag_id="topology_dag", is_paused=False))
    engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


def bearer() -> dict[str, str]:
    """A JWT-shaped credential (credential scope does not verify the signature; Airflow would)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": "user1", "jti": "topology", "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.c2ln"}


class Starter:
    """``await start(redis_url)`` runs one dagcache app (its own Redis clients, as one process has) and waits
    until it knows the DAG versions; every app of a test shares ``prefix``."""

    def __init__(self, upstream_url: str, database_url: str, prefix: str) -> None:
        self.upstream_url = upstream_url
        self.database_url = database_url
        self.prefix = prefix
        self.runners: list[web.AppRunner] = []

    async def __call__(self, redis_url: str) -> str:
        port = free_port()
        settings = make_settings(
            server={"host": "127.0.0.1", "port": port},
            upstream={"url": self.upstream_url},
            database={"url": self.database_url},
            redis={"url": redis_url, "key_prefix": self.prefix},
            versions={"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0},
        )
        app = create_app(settings)
        runner = make_runner(app, settings)
        await runner.setup()
        await web.SockSite(runner, bind_socket("127.0.0.1", port, reuse_port=False)).start()
        self.runners.append(runner)
        async with asyncio.timeout(20):
            await app[VERSIONS].wait_ready()
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def start(upstream: UpstreamServer, airflow_db: str, request: pytest.FixtureRequest) -> AsyncIterator[Starter]:
    starter = Starter(upstream.url, airflow_db, f"topo{abs(hash(request.node.nodeid)) % 10**8}")
    yield starter
    for runner in starter.runners:
        await runner.cleanup()


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with client.get(url, headers=bearer()) as resp:
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


async def until_hit(client: aiohttp.ClientSession, url: str) -> tuple[list[str], bytes]:
    """X-Cache of each request until the first HIT (a version change right after startup, while the fleet's map
    settles, can make the second request a MISS too), and the HIT's body. Every answer must be a 200."""
    outcomes: list[str] = []
    async with asyncio.timeout(20):  # hang guard
        while not outcomes or outcomes[-1] != "HIT":
            status, cache, body = await fetch(client, url)
            assert status == 200
            outcomes.append(cache)
    return outcomes, body


async def test_a_view_is_a_miss_then_a_hit_in_each_process(
    start: Starter, topology_url: str, upstream: UpstreamServer
) -> None:
    first_proxy, second_proxy = await start(topology_url), await start(topology_url)
    async with aiohttp.ClientSession() as client:
        outcomes, body = await until_hit(client, first_proxy + DAG_PATH)
        assert outcomes[0] == "MISS" and set(outcomes[:-1]) == {"MISS"}
        # The other process has its own L1: its HIT comes from the shared store (Sentinel's master / the cluster).
        status, cache, shared = await fetch(client, second_proxy + DAG_PATH)
        assert (status, cache, shared) == (200, "HIT", body)
    assert [r["raw_path"] for r in upstream.gates.requests].count(DAG_PATH) == outcomes.count("MISS")


async def test_the_fleet_version_map_lives_in_the_topology(start: Starter, topology_url: str) -> None:
    await start(topology_url)
    client = make_redis(RedisConfig(url=topology_url))
    try:
        stored = await RedisVersionStore(client, start.prefix).load_map()
    finally:
        await client.aclose()
    assert stored is not None
    assert set(stored.dags) == {"topology_dag"}


async def test_after_a_sentinel_failover_caching_resumes_on_the_new_master(start: Starter) -> None:
    """SENTINEL FAILOVER promotes the replica; the old master becomes a read-only replica. No request fails
    meanwhile, and a view not seen before is filled and then served from the new master."""
    with redis_sentinel(replicas=1) as url:
        sentinel = int(url.split("//")[1].split(",")[0].rsplit(":", 1)[1])
        before = sentinel_master(sentinel, "dagcache-master")
        proxy = await start(url)
        statuses: list[int] = []
        async with aiohttp.ClientSession() as client:
            assert (await until_hit(client, proxy + DAG_PATH))[0][0] == "MISS"
            # A Sentinel refuses (NOGOODSLAVE) until it has had an INFO answer from the replica it learnt of
            # through the master's INFO, which may take one INFO period (10 s): ask again until it agrees.
            answer = ""
            async with asyncio.timeout(30):
                while "OK" not in answer:
                    answer = await asyncio.to_thread(_cli, sentinel, "SENTINEL", "FAILOVER", "dagcache-master")
                    assert "OK" in answer or "NOGOODSLAVE" in answer, answer
                    if "OK" not in answer:
                        await asyncio.sleep(0.5)
            async with asyncio.timeout(30):
                while sentinel_master(sentinel, "dagcache-master") == before:
                    status, _, _ = await fetch(client, proxy + DAG_PATH)
                    statuses.append(status)
                    await asyncio.sleep(0.1)
            outcomes: list[str] = []
            async with asyncio.timeout(30):  # hang guard: breaker cooldown, lease handover, master rediscovery
                while outcomes[-2:] != ["MISS", "HIT"]:
                    status, cache, _ = await fetch(client, proxy + DAG_PATH + "/details")
                    statuses.append(status)
                    outcomes.append(cache)
                    await asyncio.sleep(0.2)
    assert set(statuses) == {200}


@pytest.mark.parametrize("servers", [redis_sentinel, redis_cluster], ids=["sentinel", "cluster"])
async def test_losing_every_redis_node_fails_no_request(start: Starter, servers: Callable[[], Any]) -> None:
    """Sentinels and master (or every cluster node) stop: views pass through, and stopping the proxy does not
    hang on the dead topology."""
    with servers() as url:
        proxy = await start(url)
        async with aiohttp.ClientSession() as client:
            assert (await fetch(client, proxy + DAG_PATH))[:2] == (200, "MISS")
    # Hang guard, not a speed target: with redis-py's default retries (the sentinels' before the fix) every Redis
    # call took ~15 s once nothing answered, and this block ~30 s; it takes well under a second.
    async with asyncio.timeout(10), aiohttp.ClientSession() as client:
        for view in ("/details", "/tasks", "", "/details"):
            assert (await fetch(client, proxy + DAG_PATH + view))[0] == 200
        for runner in start.runners:
            await runner.cleanup()
    start.runners.clear()


def test_dagcache_check_names_the_topology(topology_url: str) -> None:
    env = {**os.environ, "DAGCACHE_REDIS__URL": topology_url, "DAGCACHE_UPSTREAM__URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "check"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    redis_line = next(line for line in result.stdout.splitlines() if line.startswith("redis"))
    kind = topology_url.split("://")[0].split("+")[1]
    assert redis_line.split()[1] == "ok", result.stdout + result.stderr
    assert "Redis 7" in redis_line and kind in redis_line


def test_a_bad_redis_url_stops_startup_with_exit_2() -> None:
    env = {**os.environ, "DAGCACHE_REDIS__URL": "redis+sentinel://:topsecret@127.0.0.1:26379"}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "[redis] url = <redacted>: a redis+sentinel:// URL needs the master's service name" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout

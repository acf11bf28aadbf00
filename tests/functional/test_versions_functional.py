"""The version service over real Redis: one leader, every process follows, failover, fencing, bumps.

The DB side is a scripted snapshot source (tests/fakes.py); the real SQL source against real Airflow
schemas is covered in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from proxy.config import VersionsConfig
from proxy.versions.model import VersionMap
from proxy.versions.redis_store import WRITE_NOT_LEADER, RedisVersionStore
from proxy.versions.service import VersionService
from tests.fakes import ScriptedDb
from tests.servers import RedisProcess

pytestmark = pytest.mark.functional

CONFIG = VersionsConfig(poll_interval=0.1, lease_ttl=1.0, state_max_age=0, max_version_age=2.0)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    name: str = request.node.name
    return "t-" + name[:40].replace("[", "-").replace("]", "")


Factory = Callable[..., VersionService]


@pytest.fixture
async def make_service(redis_url: str, prefix: str) -> AsyncIterator[Factory]:
    services: list[tuple[VersionService, aioredis.Redis]] = []

    def make(db: ScriptedDb, name: str, config: VersionsConfig = CONFIG, url: str = redis_url) -> VersionService:
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        service = VersionService(config, db.poll, RedisVersionStore(client, prefix), instance=name)
        services.append((service, client))
        return service

    yield make
    for service, client in services:
        await service.aclose()
        await client.aclose()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class Monotonic:
    """Samples every service's map and records any version that went down."""

    def __init__(self, services: list[VersionService]) -> None:
        self.services = services
        self.seen: dict[tuple[int, str], tuple[int, int]] = {}
        self.regressions: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        for index, service in enumerate(self.services):
            current = service.current
            if current is None:
                continue
            for dag_id, version in current.dags.items():
                key = (index, dag_id)
                prev = self.seen.get(key)
                pair = (version.definition, version.state)
                if prev and (pair[0] < prev[0] or pair[1] < prev[1]):
                    self.regressions.append(f"process {index} {dag_id}: {prev} -> {pair}")
                self.seen[key] = pair

    async def _run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(0.005)

    def __enter__(self) -> Monotonic:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def version(service: VersionService, dag_id: str) -> tuple[int, int]:
    current = service.current
    assert current is not None
    entry = current.dags[dag_id]
    return entry.definition, entry.state


async def test_one_leader_polls_and_every_process_follows(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1"), "b": ("d1", "s1", "l1")})
    services = [make_service(db, f"p{i}") for i in range(3)]
    for service in services:
        await service.start()
    await until(lambda: all(s.current is not None for s in services))
    await asyncio.sleep(0.5)
    assert sum(s.is_leader for s in services) == 1
    polls_before = db.polls
    await asyncio.sleep(1.0)
    # one poll per interval for the whole fleet, not per process
    assert db.polls - polls_before <= int(1.0 / CONFIG.poll_interval) + 2

    before = version(services[0], "a")
    db.set("a", state="s2")
    await until(lambda: all(version(s, "a")[1] > before[1] for s in services), timeout=2)
    assert len({s.current.generation for s in services if s.current}) == 1
    assert all(version(s, "b") == version(services[0], "b") for s in services)


async def test_leader_death_hands_over_within_lease_ttl_without_regressions(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    services = [make_service(db, f"p{i}") for i in range(3)]
    for service in services:
        await service.start()
    await until(lambda: any(s.is_leader for s in services) and all(s.current for s in services))
    with Monotonic(services) as monitor:
        leader = next(s for s in services if s.is_leader)
        survivors = [s for s in services if s is not leader]
        # Die without releasing the lease: the others must wait for it to expire, then take over.
        for task in leader._tasks:
            task.cancel()
        leader._token = None
        dead_at = asyncio.get_running_loop().time()
        db.set("a", definition="d2")
        target = version(survivors[0], "a")
        await until(lambda: all(version(s, "a")[0] > target[0] for s in survivors), timeout=CONFIG.lease_ttl + 3)
        handover = asyncio.get_running_loop().time() - dead_at
        assert sum(s.is_leader for s in survivors) == 1
        assert handover < CONFIG.lease_ttl + 1.0
        for _ in range(5):
            db.set("a", state=f"s{_ + 10}")
            await asyncio.sleep(0.15)
    assert monitor.regressions == []


async def test_a_stale_leader_cannot_write(make_service: Factory, redis_client: aioredis.Redis, prefix: str):
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    service = make_service(db, "p0")
    await service.start()
    await until(lambda: service.is_leader and service.current is not None)
    store = RedisVersionStore(redis_client, prefix)
    stale_token = service._token
    assert stale_token is not None
    await redis_client.set(store.keys.leader, "someone-else:999", px=5000)
    state = await store.load_leader_state()
    assert state is not None
    from proxy.versions.model import advance

    newer, delta = advance(state, db.snapshot_with({"a": ("dX", "sX", "lX")}), 2e9, state_max_age=0)
    assert await store.write(stale_token, state.map.generation, newer, delta) == WRITE_NOT_LEADER
    stored = await store.load_map()
    assert stored is not None and stored.generation == state.map.generation


async def test_bump_from_any_process_reaches_all_and_survives_the_next_poll(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1"), "b": ("d1", "s1", "l1")})
    services = [make_service(db, f"p{i}") for i in range(2)]
    for service in services:
        await service.start()
    await until(lambda: any(s.is_leader for s in services) and all(s.current for s in services))
    follower = next(s for s in services if not s.is_leader)
    before = version(follower, "a")
    other = version(follower, "b")
    await follower.bump(["a"])
    assert version(follower, "a")[1] > before[1]  # visible to the writer at once
    bumped = version(follower, "a")
    await until(lambda: all(version(s, "a") >= bumped for s in services), timeout=1)
    await asyncio.sleep(0.5)  # several leader polls later the bump is still there
    assert all(version(s, "a") >= bumped for s in services)
    assert all(version(s, "b") == other for s in services)


async def test_db_failure_keeps_versions_and_ages_them(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    config = VersionsConfig(poll_interval=0.1, lease_ttl=1.0, state_max_age=0, max_version_age=0.5)
    services = [make_service(db, f"p{i}", config) for i in range(2)]
    for service in services:
        await service.start()
    await until(lambda: all(s.fresh() for s in services))
    held = {id(s): s.current for s in services}
    db.fail = True
    await until(lambda: not any(s.fresh() for s in services), timeout=3)
    for service in services:
        kept, before = service.current, held[id(service)]
        assert kept is not None and before is not None and kept.dags == before.dags
    leader = next(s for s in services if s.is_leader)
    assert leader.stats.poll_errors > 0 and leader.stats.db_error
    db.fail = False
    db.set("a", state="s2")
    await until(lambda: all(s.fresh() and version(s, "a")[1] > 0 for s in services), timeout=5)


async def test_redis_outage_and_recovery(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    with RedisProcess() as private:
        services = [make_service(db, f"p{i}", url=private.url) for i in range(2)]
        for service in services:
            await service.start()
        await until(lambda: all(s.current for s in services))
        last: dict[int, VersionMap] = {id(s): s.current for s in services if s.current is not None}
        private.stop()
        await until(lambda: all(s.stats.redis_errors > 0 for s in services), timeout=5)
        assert all(s.current == last[id(s)] for s in services)  # kept, never dropped or rewound
        private.start()
        db.set("a", definition="d2")
        await until(lambda: all(version(s, "a")[0] > last[id(s)].dags["a"].definition for s in services), timeout=10)


async def test_fallback_polling_without_redis(make_service: Factory):
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    config = VersionsConfig(poll_interval=0.1, lease_ttl=1.0, state_max_age=0, max_version_age=2.0,
                            fallback_poll_interval=0.2)
    from tests.servers import free_port

    service = make_service(db, "p0", config, url=f"redis://127.0.0.1:{free_port()}/0")
    await service.start()
    await until(lambda: service.current is not None, timeout=5)
    assert service.fresh()


async def test_standalone_service_without_redis():
    db = ScriptedDb({"a": ("d1", "s1", "l1")})
    service = VersionService(CONFIG, db.poll, None)
    await service.start()
    try:
        await until(lambda: service.current is not None)
        assert service.is_leader
        before = version(service, "a")
        await service.bump(["a"])
        assert version(service, "a")[1] > before[1]
    finally:
        await service.aclose()

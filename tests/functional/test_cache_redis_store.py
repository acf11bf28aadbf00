"""cache.redis_store and cache.singleflight over a real redis-server.

A "process" here is its own Redis client + RedisCacheStore + FillNotifier, as each proxy worker has.
"""

from __future__ import annotations

import asyncio
import collections
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cache import CachedResponse, CacheKey, CacheUnavailable, Outcome, encode, fill_once
from cache.redis_store import FillNotifier, RedisCacheStore
from tests.servers import RedisProcess

pytestmark = pytest.mark.functional


def make_client(url: str) -> aioredis.Redis:
    # No client-side retries: a stopped server must surface at once (the proxy's circuit breaker decides).
    return aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def make_key(name: str = "k", dag: str = "example_dag") -> str:
    return CacheKey("dagcache", "tasks", dag, (("def", 1),), "scope", name).render()


def make_entry(key: str, body: bytes = b'{"tasks": []}' * 100) -> CachedResponse:
    return CachedResponse.create(
        status=200, headers=(("content-type", "application/json"),), body=body, key=key, etag='"e"', stored_at=1.5
    )


@dataclass
class Proc:
    client: aioredis.Redis
    store: RedisCacheStore
    notifier: FillNotifier
    name: str

    async def fill(
        self,
        key: str,
        produce: Callable[[], Awaitable[CachedResponse | None]],
        *,
        lock_ttl: float = 10.0,
        wait_timeout: float = 10.0,
    ) -> tuple[CachedResponse | None, Outcome]:
        return await fill_once(
            self.store,
            self.notifier,
            key,
            produce,
            ttl=60,
            lock_ttl=lock_ttl,
            wait_timeout=wait_timeout,
            owner=self.name,
        )


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = make_client(redis_url)
    yield client
    await client.aclose()


MakeProc = Callable[..., Awaitable[Proc]]


@pytest.fixture
async def make_proc(redis_url: str, prefix: str) -> AsyncIterator[MakeProc]:
    procs: list[Proc] = []

    async def make(name: str = "p0", url: str = redis_url, start: bool = True) -> Proc:
        client = make_client(url)
        store = RedisCacheStore(client, prefix=prefix, default_ttl=30)
        proc = Proc(client, store, FillNotifier(store), name)
        procs.append(proc)
        if start:
            assert await proc.notifier.start()
        return proc

    yield make
    for proc in procs:
        await proc.notifier.aclose()
        await proc.store.aclose()
        await proc.client.aclose()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class Producer:
    """An upstream stand-in: counts calls, takes ``delay`` seconds, returns an entry (or None, or raises)."""

    def __init__(self, key: str, delay: float = 0.2, result: str = "entry") -> None:
        self.key, self.delay, self.result, self.calls = key, delay, result, 0

    async def __call__(self) -> CachedResponse | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return make_entry(self.key) if self.result == "entry" else None


# -- the store --


async def test_get_put_and_ttl(make_proc: MakeProc, admin: aioredis.Redis, prefix: str):
    store = (await make_proc()).store
    key = make_key()
    assert await store.get(key) is None
    entry = make_entry(key)
    await store.put(key, entry)
    assert await store.get(key) == entry
    assert await admin.get(f"{prefix}:{key}") == encode(entry)
    assert 29_000 < await admin.pttl(f"{prefix}:{key}") <= 30_000  # default_ttl
    await store.put(key, entry, 5)
    assert 4_000 < await admin.pttl(f"{prefix}:{key}") <= 5_000
    await store.put(make_key("zero"), make_entry(make_key("zero")), 0)
    assert await admin.exists(f"{prefix}:{make_key('zero')}") == 0
    with pytest.raises(ValueError):
        await store.put(key, make_entry(make_key("other")))


async def test_expired_entry_is_a_miss(make_proc: MakeProc):
    store = (await make_proc()).store
    key = make_key()
    await store.put(key, make_entry(key), 0.05)
    await asyncio.sleep(0.15)
    assert await store.get(key) is None


@pytest.mark.parametrize("raw", [b"garbage", b"dcache0\n{}\n", b'dcache1\n{"status": 200}\n', b""])
async def test_corrupt_value_is_a_miss_and_is_deleted(
    make_proc: MakeProc, admin: aioredis.Redis, prefix: str, raw: bytes
):
    store = (await make_proc()).store
    key = make_key()
    await admin.set(f"{prefix}:{key}", raw)
    assert await store.get(key) is None
    assert await admin.exists(f"{prefix}:{key}") == 0


async def test_an_entry_copied_under_another_key_is_a_miss(make_proc: MakeProc, admin: aioredis.Redis, prefix: str):
    store = (await make_proc()).store
    await admin.set(f"{prefix}:{make_key('b')}", encode(make_entry(make_key("a"))))
    assert await store.get(make_key("b")) is None


async def test_refuses_a_decoding_client(redis_url: str):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisCacheStore(client, prefix="p", default_ttl=1)
        with pytest.raises(ValueError, match="hash tag"):
            RedisCacheStore(make_client(redis_url), prefix="p{x}", default_ttl=1)
    finally:
        await client.aclose()


async def test_lock_is_owned_and_expires(make_proc: MakeProc):
    store = (await make_proc()).store
    key = make_key()
    assert await store.lock_ttl(key) == 0
    assert await store.try_lock(key, "a", 5_000)
    assert not await store.try_lock(key, "b", 5_000)
    assert 4.0 < await store.lock_ttl(key) <= 5.0
    await store.unlock(key, "b")  # not the owner: no effect
    assert not await store.try_lock(key, "b", 5_000)
    await store.unlock(key, "a")
    assert await store.try_lock(key, "b", 50)
    await asyncio.sleep(0.1)
    assert await store.try_lock(key, "c", 50)


async def test_redis_down_is_cache_unavailable_and_recovers():
    with RedisProcess() as server:
        client = make_client(server.url)
        store = RedisCacheStore(client, prefix="p", default_ttl=30)
        notifier = FillNotifier(store)
        try:
            assert await notifier.start()
            key = make_key()
            await store.put(key, make_entry(key))
            server.stop()
            for call in (
                store.get(key),
                store.put(key, make_entry(key)),
                store.try_lock(key, "o", 100),
                store.unlock(key, "o"),
                store.lock_ttl(key),
                store.publish_filled(key),
            ):
                with pytest.raises(CacheUnavailable) as info:
                    await call
                assert info.value.__cause__ is not None
            await until(lambda: not notifier.connected)
            # no Redis: coordination fails, the fill still happens (once per process)
            produce = Producer(key, delay=0.05)
            results = await asyncio.gather(
                *(
                    fill_once(store, notifier, key, produce, ttl=60, lock_ttl=1, wait_timeout=1, owner="o")
                    for _ in range(10)
                )
            )
            assert produce.calls == 1
            assert collections.Counter(o for _, o in results) == {Outcome.FALLBACK: 1, Outcome.SHARED: 9}
            assert all(entry is not None for entry, _ in results)
            server.start()  # same port, empty data
            assert await store.get(key) is None
            await store.put(key, make_entry(key))
            assert await store.get(key) == make_entry(key)
            await until(lambda: notifier.connected)
            assert notifier.subscriptions == 2
        finally:
            await notifier.aclose()
            await client.aclose()


# -- single fill across processes --


async def test_fifty_concurrent_misses_in_three_processes_make_one_upstream_request(
    make_proc: MakeProc, admin: aioredis.Redis, prefix: str
):
    procs = [await make_proc(f"p{i}") for i in range(3)]
    keys = [make_key(f"k{i}", dag=f"dag{i}") for i in range(3)]
    producers = {key: Producer(key, delay=0.2) for key in keys}
    rng = random.Random(7)

    async def caller(i: int, key: str) -> tuple[CachedResponse | None, Outcome]:
        await asyncio.sleep(rng.uniform(0, 0.3))  # arrivals before, during and after the fill
        return await procs[i % 3].fill(key, producers[key])

    async def probe() -> list[tuple[bytes, int]]:
        await asyncio.sleep(0.1)
        return [
            (name if isinstance(name, bytes) else name.encode(), count)
            for name, count in await admin.pubsub_numsub(f"{prefix}:filled")
        ]

    loop = asyncio.get_running_loop()
    started = loop.time()
    results, subscribers = await asyncio.gather(
        asyncio.gather(*(caller(i, key) for key in keys for i in range(50))), probe()
    )
    elapsed = loop.time() - started
    assert [p.calls for p in producers.values()] == [1, 1, 1]
    assert collections.Counter(o for _, o in results) == {Outcome.FILLED: 3, Outcome.SHARED: 147}
    for index, key in enumerate(keys):
        entries = {encode(entry) for entry, _ in results[index * 50 : (index + 1) * 50] if entry is not None}
        assert entries == {encode(make_entry(key))}
    assert elapsed < 2.0  # waiters were woken by the notification, not by the 10 s lock expiry
    assert subscribers == [(f"{prefix}:filled".encode(), 3)]  # one subscription per process, whatever the waiters
    assert [p.notifier.subscriptions for p in procs] == [1, 1, 1]
    assert all(p.notifier.inflight == {} for p in procs)


async def test_a_dead_holder_is_taken_over_after_its_lock_expires(make_proc: MakeProc):
    procs = [await make_proc(f"p{i}") for i in range(3)]
    key = make_key()
    assert await procs[0].store.try_lock(key, "dead-holder", 1_000)  # took the lock, then died
    produce = Producer(key, delay=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(procs[i % 3].fill(key, produce, lock_ttl=5) for i in range(50)))
    elapsed = loop.time() - started
    assert produce.calls == 1  # one waiter took over; the others shared its fill
    assert collections.Counter(o for _, o in results) == {Outcome.FALLBACK: 1, Outcome.SHARED: 49}
    assert 0.9 < elapsed < 2.5


async def test_waiters_fall_back_after_wait_timeout_at_most_once_per_process(make_proc: MakeProc):
    procs = [await make_proc(f"p{i}") for i in range(3)]
    key = make_key()
    assert await procs[0].store.try_lock(key, "hung-holder", 30_000)
    produce = Producer(key, delay=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(procs[i % 3].fill(key, produce, wait_timeout=0.3) for i in range(50)))
    assert loop.time() - started < 2.0
    assert 1 <= produce.calls <= 3
    outcomes = collections.Counter(o for _, o in results)
    assert outcomes == {Outcome.FALLBACK: produce.calls, Outcome.SHARED: 50 - produce.calls}
    assert all(entry is not None for entry, _ in results)


async def test_an_unstorable_result_sends_every_caller_to_its_own_request(make_proc: MakeProc):
    procs = [await make_proc(f"p{i}") for i in range(3)]
    key = make_key()
    producers = [Producer(key, delay=0.05, result="none") for _ in range(12)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(procs[i % 3].fill(key, p) for i, p in enumerate(producers)))
    assert [p.calls for p in producers] == [1] * 12  # everyone got a response of its own
    assert all(entry is None for entry, _ in results)
    assert loop.time() - started < 2.0  # "done" is published on release: nobody waited for the lock TTL


async def test_notifier_wakes_only_the_announced_key(make_proc: MakeProc):
    proc = await make_proc()
    other = await make_proc("p1")
    with proc.notifier.watch("a") as a, proc.notifier.watch("b") as b, proc.notifier.watch("a") as a_again:
        assert a is a_again
        await other.store.publish_filled("a")
        assert await a.wait(2.0)
        assert not await b.wait(0.1)
    assert proc.notifier.messages == 1

"""cache.store.MemoryCacheStore (bytes-bounded LRU with TTLs), and single fill in a lone process with it."""

from __future__ import annotations

import asyncio

import pytest

from cache import CachedResponse, LocalFillCoordinator, MemoryCacheStore, Outcome, fill_once, size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_entry(key: str, body_size: int = 1000) -> CachedResponse:
    return CachedResponse(200, (("content-type", "application/json"),), b"x" * body_size, None, None, '"e"', 0.0, key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_get_put_and_counters(clock: Clock):
    store = MemoryCacheStore(10_000, clock=clock)
    assert await store.get("a") is None
    entry = make_entry("a")
    await store.put("a", entry, 60)
    assert await store.get("a") is entry
    assert store.lookup("a") is entry
    assert (store.hits, store.misses, store.evictions, store.bytes, len(store)) == (2, 1, 0, size(entry), 1)
    assert "hits=2" in repr(store)


async def test_expired_entries_read_as_a_miss_and_are_dropped(clock: Clock):
    store = MemoryCacheStore(10_000, clock=clock)
    await store.put("a", make_entry("a"), 10)
    clock.now += 9.99
    assert await store.get("a") is not None
    clock.now += 0.01
    assert await store.get("a") is None
    assert (store.bytes, len(store), store.misses) == (0, 0, 1)


async def test_non_positive_ttl_stores_nothing(clock: Clock):
    store = MemoryCacheStore(10_000, clock=clock)
    await store.put("a", make_entry("a"), 0)
    await store.put("b", make_entry("b"), -1)
    assert len(store) == 0 and store.bytes == 0


async def test_lru_by_bytes(clock: Clock):
    one = size(make_entry("k0"))
    store = MemoryCacheStore(3 * one, clock=clock)
    for name in ("k0", "k1", "k2"):
        await store.put(name, make_entry(name), 60)
    assert store.bytes == 3 * one
    assert await store.get("k0") is not None  # k0 is now the most recent; k1 the least
    await store.put("k3", make_entry("k3"), 60)
    assert [name for name in ("k0", "k1", "k2", "k3") if store.lookup(name)] == ["k0", "k2", "k3"]
    assert store.evictions == 1 and store.bytes == 3 * one
    big = make_entry("big", body_size=2000)  # needs the room of the two least recently used
    await store.put("big", big, 60)
    assert store.evictions == 3 and store.bytes == one + size(big) <= store.max_bytes
    assert store.lookup("k3") is not None and store.lookup("big") is big


async def test_an_entry_larger_than_the_store_is_not_stored(clock: Clock):
    store = MemoryCacheStore(5_000, clock=clock)
    await store.put("a", make_entry("a"), 60)
    await store.put("huge", make_entry("huge", body_size=6_000), 60)
    assert store.lookup("huge") is None
    assert store.lookup("a") is not None and store.evictions == 0


async def test_replacing_a_key_keeps_the_byte_count_right(clock: Clock):
    store = MemoryCacheStore(100_000, clock=clock)
    await store.put("a", make_entry("a", 1000), 60)
    await store.put("a", make_entry("a", 2000), 60)
    assert store.bytes == size(make_entry("a", 2000)) and len(store) == 1


async def test_purge_expired_and_aclose(clock: Clock):
    store = MemoryCacheStore(100_000, clock=clock)
    await store.put("short", make_entry("short"), 1)
    await store.put("long", make_entry("long"), 100)
    clock.now += 2
    assert store.purge_expired() == 1
    assert store.bytes == size(make_entry("long"))
    await store.aclose()
    assert len(store) == 0 and store.bytes == 0


async def test_entry_must_belong_to_its_key():
    with pytest.raises(ValueError):
        await MemoryCacheStore(10_000).put("a", make_entry("b"), 60)


# -- single fill with the embedded store (no Redis) --


class Producer:
    def __init__(self, key: str, delay: float = 0.05, result: str = "entry") -> None:
        self.key, self.delay, self.result, self.calls = key, delay, result, 0

    async def __call__(self) -> CachedResponse | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.result == "raise":
            raise RuntimeError("upstream said no")
        return make_entry(self.key) if self.result == "entry" else None


async def fill(store: MemoryCacheStore, coordinator: LocalFillCoordinator, produce: Producer):
    return await fill_once(store, coordinator, produce.key, produce, ttl=60, lock_ttl=5, wait_timeout=5, owner="test")


async def test_concurrent_misses_in_one_process_produce_once():
    store, coordinator, produce = MemoryCacheStore(1_000_000), LocalFillCoordinator(), Producer("k")
    results = await asyncio.gather(*(fill(store, coordinator, produce) for _ in range(50)))
    assert produce.calls == 1
    assert [outcome for _, outcome in results].count(Outcome.FILLED) == 1
    assert [outcome for _, outcome in results].count(Outcome.SHARED) == 49
    assert len({id(entry) for entry, _ in results}) == 1
    assert store.lookup("k") is results[0][0]
    assert coordinator.inflight == {}


async def test_nothing_storable_means_every_caller_produces_its_own():
    store, coordinator = MemoryCacheStore(1_000_000), LocalFillCoordinator()
    producers = [Producer("k", result="none") for _ in range(5)]
    results = await asyncio.gather(*(fill(store, coordinator, p) for p in producers))
    assert [p.calls for p in producers] == [1] * 5
    assert all(entry is None for entry, _ in results)
    assert sorted(o.value for _, o in results) == ["fallback"] * 4 + ["filled"]


async def test_a_failing_producer_raises_to_its_own_caller_only():
    store, coordinator = MemoryCacheStore(1_000_000), LocalFillCoordinator()
    failing, others = Producer("k", result="raise"), [Producer("k") for _ in range(3)]
    first = asyncio.ensure_future(fill(store, coordinator, failing))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(fill(store, coordinator, p) for p in others))
    with pytest.raises(RuntimeError, match="upstream said no"):
        await first
    assert sum(p.calls for p in others) == 3  # each fell back to its own request
    assert all(entry is not None and outcome is Outcome.FALLBACK for entry, outcome in results)


async def test_a_cancelled_first_caller_does_not_abort_the_fill():
    store, coordinator, produce = MemoryCacheStore(1_000_000), LocalFillCoordinator(), Producer("k", delay=0.1)
    first = asyncio.ensure_future(fill(store, coordinator, produce))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(fill(store, coordinator, Producer("k")))
    await asyncio.sleep(0.01)
    first.cancel()
    entry, outcome = await second
    assert first.cancelled()
    assert entry is not None and outcome is Outcome.SHARED and produce.calls == 1
    assert store.lookup("k") is entry

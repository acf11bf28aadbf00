"""One producer per key, fleet-wide: :func:`fill_once`.

On a miss, :func:`fill_once` makes sure that concurrent misses for one key in every process of every replica
cause one call of ``produce`` (one upstream request), and that everybody else gets its result:

* **in one process** the first caller starts a *flight* (a task detached from the caller, so a client that
  disconnects does not abort the fill for the others); later callers for the key await that flight: no
  Redis round trip per waiter;
* **across processes** the flight takes the key's lock (``SET NX PX``). The holder re-reads the store (a fill
  may have landed since the caller's miss), runs ``produce``, stores a non-``None`` result, releases the lock
  and publishes "done". A flight that finds the lock taken watches for "done" (one subscription per process,
  see :class:`cache.redis_store.FillNotifier`), re-reads the store, and otherwise waits until the lock
  expires at the latest.

Failure cases (correctness over load: a caller always gets a real response):

* the holder dies or hangs (lock expires without a fill): one waiting flight takes the lock over and
  produces (``FALLBACK``); the others keep waiting for it;
* ``wait_timeout`` passes without a fill: each waiting flight produces itself (``FALLBACK``), so at most one
  extra upstream request per process;
* the producer's result is ``None`` (not storable, e.g. a 500) or ``produce`` raised: callers that shared the
  flight call their own ``produce`` (``FALLBACK``), since a ``None`` result carries no response for them;
  other processes take the lock over in turn;
* the coordinator (Redis) fails: the flight logs it and produces uncoordinated (``FALLBACK``); a failing
  ``store.put`` is logged and the produced entry still returned. :func:`fill_once` never raises
  :class:`~cache.errors.CacheError`; it raises only what the caller's own ``produce`` raises.

``lock_ttl`` must exceed the longest ``produce`` (the upstream timeout), or a slow holder is taken over.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from cache.entry import CachedResponse
from cache.errors import CacheError
from cache.store import CacheStore

log = logging.getLogger("cache.singleflight")

Produce = Callable[[], Awaitable[CachedResponse | None]]


class Outcome(enum.Enum):
    """How :func:`fill_once` got its result."""

    FILLED = "filled"  # our flight held the lock at once and produced
    SHARED = "shared"  # the result of another producer (this process or another)
    FALLBACK = "fallback"  # we produced without normal coordination (takeover, timeout, Redis error, no result)


class FillWatch(Protocol):
    async def wait(self, seconds: float) -> bool:
        """``True`` once the key was announced "done" since the watch began, ``False`` after ``seconds``."""
        ...


class FillCoordinator(Protocol):
    """What :func:`fill_once` needs besides the store: a per-process object (one per event loop) holding the
    in-flight fills of the process, the fleet-wide lock and the "done" signal."""

    inflight: dict[str, asyncio.Task[CachedResponse | None]]

    async def try_lock(self, key: str, owner: str, ttl_ms: int) -> bool: ...

    async def unlock(self, key: str, owner: str) -> None: ...

    async def lock_ttl(self, key: str) -> float:
        """Seconds until the key's lock expires; 0 if there is none."""
        ...

    async def publish_filled(self, key: str) -> None: ...

    def watch(self, key: str) -> AbstractContextManager[FillWatch]:
        """Register interest in the key's "done" signal for the ``with`` block."""
        ...


class _NeverDone:
    async def wait(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return False


class LocalFillCoordinator:
    """The coordinator of a lone process (no Redis): in-process sharing only; the lock always succeeds."""

    def __init__(self) -> None:
        self.inflight: dict[str, asyncio.Task[CachedResponse | None]] = {}

    async def try_lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        return True

    async def unlock(self, key: str, owner: str) -> None:
        return None

    async def lock_ttl(self, key: str) -> float:
        return 0.0

    async def publish_filled(self, key: str) -> None:
        return None

    @contextmanager
    def watch(self, key: str) -> Iterator[FillWatch]:
        yield _NeverDone()


@dataclass
class _Flight:
    store: CacheStore
    coordinator: FillCoordinator
    key: str
    produce: Produce
    ttl: float
    lock_ms: int
    wait_timeout: float
    owner: str
    outcome: Outcome = Outcome.FALLBACK

    async def run(self) -> CachedResponse | None:
        try:
            turn = await self._wait_turn()
        except CacheError as exc:
            log.warning("fill coordination failed for %s (%s): producing without the lock", self.key, exc)
            turn = None
        if isinstance(turn, CachedResponse):
            self.outcome = Outcome.SHARED
            return turn
        if turn is not None:
            return await self._hold(turn)
        self.outcome = Outcome.FALLBACK
        return await produce_and_store(self.store, self.coordinator, self.key, self.produce, self.ttl)

    async def _wait_turn(self) -> CachedResponse | Outcome | None:
        """Another producer's entry, the outcome to report if we now hold the lock, or ``None`` (gave up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        outcome = Outcome.FILLED
        while True:
            if await self.coordinator.try_lock(self.key, self.owner, self.lock_ms):
                return outcome
            outcome = Outcome.FALLBACK  # if we get the lock later, the first holder failed: a takeover
            with self.coordinator.watch(self.key) as watch:
                if (entry := await self.store.get(self.key)) is not None:
                    return entry
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await watch.wait(min(remaining, await self.coordinator.lock_ttl(self.key)))
            if (entry := await self.store.get(self.key)) is not None:
                return entry
            if loop.time() >= deadline:
                break
        log.warning("no fill of %s within %.1f s: producing without the lock", self.key, self.wait_timeout)
        return None

    async def _hold(self, outcome: Outcome) -> CachedResponse | None:
        try:
            if (entry := await _quiet_get(self.store, self.key)) is not None:
                self.outcome = Outcome.SHARED
                return entry
            self.outcome = outcome
            entry = await self.produce()
            if entry is not None:
                await _quiet_put(self.store, self.key, entry, self.ttl)
            return entry
        finally:
            try:
                await self.coordinator.unlock(self.key, self.owner)
                await self.coordinator.publish_filled(self.key)
            except CacheError as exc:
                log.warning("could not release the fill lock of %s (it expires alone): %s", self.key, exc)


async def fill_once(
    store: CacheStore,
    coordinator: FillCoordinator,
    key: str,
    produce: Produce,
    *,
    ttl: float,
    lock_ttl: float,
    wait_timeout: float,
    owner: str,
) -> tuple[CachedResponse | None, Outcome]:
    """Fill ``key`` with exactly one ``produce`` call fleet-wide; see the module docstring for the cases.

    ``ttl`` is the entry's lifetime in the store, ``lock_ttl`` the lock's (seconds), ``wait_timeout`` how long a
    flight waits for another producer before producing itself, ``owner`` names this process in lock values
    (a random suffix makes each flight's lock token unique).

    Returns ``(entry, outcome)``. The entry is ``None`` only when *this caller's* ``produce`` ran and returned
    ``None``, so a caller whose ``produce`` records the upstream response always has a response to send.
    """
    if lock_ttl <= 0 or wait_timeout < 0:
        raise ValueError("lock_ttl must be > 0 and wait_timeout >= 0")
    flight = coordinator.inflight.get(key)
    if flight is None:
        state = _Flight(
            store,
            coordinator,
            key,
            produce,
            ttl,
            max(1, int(lock_ttl * 1000)),
            wait_timeout,
            f"{owner}:{secrets.token_hex(6)}",
        )
        flight = asyncio.get_running_loop().create_task(state.run(), name=f"cache-fill:{key[:80]}")
        coordinator.inflight[key] = flight
        flight.add_done_callback(lambda task: _forget(coordinator, key, task))
        await asyncio.wait((flight,))
        if not flight.cancelled():
            return flight.result(), state.outcome  # raises what our own produce raised
    else:
        await asyncio.wait((flight,))
        if not flight.cancelled() and flight.exception() is None and (entry := flight.result()) is not None:
            return entry, Outcome.SHARED
    # The flight we shared gave no entry (or was cancelled at shutdown): we need a response of our own.
    return await produce_and_store(store, coordinator, key, produce, ttl), Outcome.FALLBACK


async def produce_and_store(
    store: CacheStore, coordinator: FillCoordinator, key: str, produce: Produce, ttl: float
) -> CachedResponse | None:
    """Call ``produce`` without the lock; store and announce a non-``None`` result (store errors are logged)."""
    entry = await produce()
    if entry is not None and await _quiet_put(store, key, entry, ttl):
        try:
            await coordinator.publish_filled(key)
        except CacheError as exc:
            log.warning("could not announce the fill of %s: %s", key, exc)
    return entry


def _forget(coordinator: FillCoordinator, key: str, task: asyncio.Task[CachedResponse | None]) -> None:
    if coordinator.inflight.get(key) is task:
        del coordinator.inflight[key]
    if not task.cancelled():
        task.exception()  # retrieved: the caller that started the flight re-raises it


async def _quiet_get(store: CacheStore, key: str) -> CachedResponse | None:
    try:
        return await store.get(key)
    except CacheError as exc:
        log.warning("store read of %s failed: %s", key, exc)
        return None


async def _quiet_put(store: CacheStore, key: str, entry: CachedResponse, ttl: float) -> bool:
    try:
        await store.put(key, entry, ttl)
    except CacheError as exc:
        log.warning("store write of %s failed: %s", key, exc)
        return False
    return True

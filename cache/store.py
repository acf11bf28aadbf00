"""The storage seam and the in-process store.

Entries are immutable and content-addressed (see :mod:`cache.keys`), so a per-process store can never
disagree with Redis: it only holds fewer entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from cache.entry import CachedResponse, size


class CacheStore(Protocol):
    """Where entries live. Keys are rendered :class:`~cache.keys.CacheKey` strings."""

    async def get(self, key: str) -> CachedResponse | None:
        """The entry stored under ``key``, or ``None`` (a miss, also for an expired or unreadable entry).

        May raise :class:`~cache.errors.CacheUnavailable`.
        """
        ...

    async def put(self, key: str, entry: CachedResponse, ttl: float) -> None:
        """Store ``entry`` under ``key`` for ``ttl`` seconds (``ttl <= 0`` stores nothing).

        ``entry.key`` must equal ``key``. May raise :class:`~cache.errors.CacheUnavailable`.
        """
        ...

    async def aclose(self) -> None:
        """Release what the store itself opened (never a client it was given)."""
        ...


class MemoryCacheStore:
    """An in-process LRU bounded by bytes (the sum of :func:`cache.entry.size`), honouring TTLs.

    Used as the L1 in front of Redis and as the only store when no Redis is configured. An entry larger than
    ``max_bytes`` is not stored; an expired entry reads as a miss and is dropped. ``clock`` returns seconds
    (monotonic by default; tests pass their own). The counters ``hits``, ``misses``, ``evictions`` (entries
    pushed out to make room) and ``bytes`` (currently held) are plain attributes for metrics.

    :meth:`lookup` is the synchronous form of :meth:`get` for the hit path (no coroutine to create).
    """

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CachedResponse, float, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<MemoryCacheStore entries={len(self._entries)} bytes={self.bytes}/{self.max_bytes} "
            f"hits={self.hits} misses={self.misses} evictions={self.evictions}>"
        )

    def lookup(self, key: str) -> CachedResponse | None:
        """:meth:`get` without the coroutine."""
        item = self._entries.get(key)
        if item is None:
            self.misses += 1
            return None
        entry, expires_at, _ = item
        if self._clock() >= expires_at:
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    async def get(self, key: str) -> CachedResponse | None:
        return self.lookup(key)

    def store(self, key: str, entry: CachedResponse, ttl: float) -> None:
        """:meth:`put` without the coroutine."""
        if entry.key != key:
            raise ValueError(f"entry for {entry.key!r} put under {key!r}")
        self._drop(key)
        cost = size(entry)
        if ttl <= 0 or cost > self.max_bytes:
            return
        while self.bytes + cost > self.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1
        self._entries[key] = (entry, self._clock() + ttl, cost)
        self.bytes += cost

    async def put(self, key: str, entry: CachedResponse, ttl: float) -> None:
        self.store(key, entry, ttl)

    def purge_expired(self) -> int:
        """Drop every expired entry now (they are otherwise dropped when read or evicted); returns the count."""
        now = self._clock()
        expired = [key for key, (_, expires_at, _) in self._entries.items() if now >= expires_at]
        for key in expired:
            self._drop(key)
        return len(expired)

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self.bytes -= item[2]

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0

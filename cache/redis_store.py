"""Entries, fill locks and the "done" signal in Redis (standalone, Sentinel or Cluster via redis-py).

Layout, with ``P`` the prefix (omitted with its colon when empty) and ``K`` a rendered
:class:`~cache.keys.CacheKey`:

* ``P:K`` — the encoded entry (:func:`cache.entry.encode`), ``SET ... PX ttl``;
* ``P:K:lock`` — the fill lock, value = the holder's owner token, ``SET NX PX``; same hash slot as the entry
  (``K`` carries the hash tag ``{namespace:dag}``, and the prefix has no braces);
* channel ``P:filled`` — messages are keys whose fill is done (stored, or given up), one channel for all keys.

Every Redis failure (:data:`REDIS_ERRORS`: ``RedisError``, cluster errors, ``OSError``, timeouts) surfaces as
:class:`~cache.errors.CacheUnavailable` through :func:`map_redis_errors`. The stores receive their client and never
close it; it must be created with ``decode_responses=False``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from cache.entry import CachedResponse, decode, encode
from cache.errors import CacheUnavailable, CorruptEntry

log = logging.getLogger("cache.redis")

#: What the stores accept: a client of one server (standalone or a Sentinel master) or of a Redis Cluster.
RedisClient = aioredis.Redis | RedisCluster

#: Everything a Redis call can raise when Redis is unreachable or failing. ``RedisClusterException`` ("cannot
#: be connected", slot not covered) is not a ``RedisError``; ``OSError`` covers sockets and timeouts.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def cluster_ready(client: RedisClient) -> None:
    """Let a cluster client learn its slot map (it does so on its first command): a ``ClusterPubSub`` routes
    SUBSCRIBE by the channel's slot and fails with a ``KeyError`` before that. No-op for other clients."""
    if isinstance(client, RedisCluster):
        _ = await client.initialize()


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """Turn redis-py, socket and timeout errors into :class:`CacheUnavailable` (``raise ... from exc``)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(describe_redis_error(exc)) from exc


def describe_redis_error(exc: BaseException) -> str:
    """``Redis: <type>: <message>`` in one readable line: Sentinel's "No master found" lists the repr of every
    sentinel client (kilobytes); that part is dropped."""
    text = str(exc).split(" : <redis.", 1)[0]
    return f"Redis: {type(exc).__name__}: {text if len(text) <= 300 else text[:297] + '...'}"


class RedisCacheStore:
    """A :class:`~cache.store.CacheStore` in Redis, plus the primitives of a fleet-wide single fill.

    A corrupt or foreign value reads as a miss and is deleted. ``put`` without a ``ttl`` uses ``default_ttl``.
    """

    def __init__(self, client: RedisClient, *, prefix: str, default_ttl: float) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix must not contain '{' or '}': the key's hash tag must come first")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisCacheStore needs a client created with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.default_ttl = default_ttl
        self.channel = f"{prefix}:filled" if prefix else "filled"
        self._unlock = client.register_script(_UNLOCK)

    def redis_key(self, key: str) -> str:
        return f"{self.prefix}:{key}" if self.prefix else key

    async def get(self, key: str) -> CachedResponse | None:
        name = self.redis_key(key)
        with map_redis_errors():
            raw = await self.client.get(name)
        if raw is None:
            return None
        if not isinstance(raw, bytes):
            raise TypeError("RedisCacheStore needs a client created with decode_responses=False")
        try:
            return decode(raw, key=key)
        except CorruptEntry as exc:
            log.warning("dropping unreadable entry %s: %s", name, exc)
            with map_redis_errors():
                await self.client.delete(name)
            return None

    async def put(self, key: str, entry: CachedResponse, ttl: float | None = None) -> None:
        if entry.key != key:
            raise ValueError(f"entry for {entry.key!r} put under {key!r}")
        seconds = self.default_ttl if ttl is None else ttl
        if seconds <= 0:
            return
        with map_redis_errors():
            await self.client.set(self.redis_key(key), encode(entry), px=max(1, round(seconds * 1000)))

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    async def try_lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Take the fill lock of ``key`` for ``ttl_ms`` unless somebody holds it."""
        with map_redis_errors():
            return bool(await self.client.set(f"{self.redis_key(key)}:lock", owner, nx=True, px=ttl_ms))

    async def unlock(self, key: str, owner: str) -> None:
        """Release the fill lock if ``owner`` still holds it (compare-and-delete, atomic)."""
        with map_redis_errors():
            await self._unlock(keys=[f"{self.redis_key(key)}:lock"], args=[owner])

    async def lock_ttl(self, key: str) -> float:
        """Seconds until the fill lock of ``key`` expires; 0 without a lock, infinity for one without TTL."""
        with map_redis_errors():
            ms = int(await self.client.pttl(f"{self.redis_key(key)}:lock"))
        return float("inf") if ms == -1 else max(ms, 0) / 1000

    async def publish_filled(self, key: str) -> None:
        """Tell every process that the fill of ``key`` is over (stored, or given up: waiters re-read)."""
        with map_redis_errors():
            await self.client.publish(self.channel, key.encode())


class _KeyWatch:
    __slots__ = ("event", "users")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.users = 0

    async def wait(self, seconds: float) -> bool:
        if self.event.is_set():
            return True
        try:
            async with asyncio.timeout(max(seconds, 0)):
                await self.event.wait()
        except TimeoutError:
            return False
        return True


class FillNotifier:
    """The per-process fill coordinator over one :class:`RedisCacheStore` (a
    :class:`~cache.singleflight.FillCoordinator`).

    It owns ONE pub/sub subscription to the store's channel, shared by every waiter of the process: a waiter
    registers its key in a dict (:meth:`watch`) and a single reader task sets the key's event when its "done"
    message arrives. When the subscription is (re)established every registered waiter is woken, since a
    message may have been missed while disconnected; the reader reconnects alone with a capped backoff.
    ``inflight`` is the process's table of running fills used by :func:`cache.singleflight.fill_once`.
    """

    def __init__(self, store: RedisCacheStore) -> None:
        self.store = store
        self.inflight: dict[str, asyncio.Task[CachedResponse | None]] = {}
        self.subscriptions = 0  # SUBSCRIBE commands issued: 1 unless the connection was lost
        self.messages = 0
        self._watches: dict[str, _KeyWatch] = {}
        self._subscribed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._subscribed.is_set()

    async def start(self, wait: float = 5.0) -> bool:
        """Start the reader; ``True`` once subscribed (within ``wait`` seconds), else it keeps retrying."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._run(), name="cache-fill-notifier")
        try:
            async with asyncio.timeout(wait):
                await self._subscribed.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop the reader and cancel fills still running (their callers fall back to producing)."""
        # A flag as well as cancel(): redis-py may swallow a cancellation that lands while get_message() times
        # out (asyncio.timeout turns it into a timeout), and the reader must still stop.
        self._closing = True
        for task in [*self.inflight.values(), *([self._reader] if self._reader else [])]:
            task.cancel()
        if self._reader is not None:
            await asyncio.wait((self._reader,), timeout=5.0)
            self._reader = None

    @contextmanager
    def watch(self, key: str) -> Iterator[_KeyWatch]:
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _KeyWatch()
        watch.users += 1
        try:
            yield watch
        finally:
            watch.users -= 1
            if watch.users == 0 and self._watches.get(key) is watch:
                del self._watches[key]

    async def try_lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        return await self.store.try_lock(key, owner, ttl_ms)

    async def unlock(self, key: str, owner: str) -> None:
        await self.store.unlock(key, owner)

    async def lock_ttl(self, key: str) -> float:
        return await self.store.lock_ttl(key)

    async def publish_filled(self, key: str) -> None:
        await self.store.publish_filled(key)

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            pubsub = self.store.client.pubsub()
            try:
                await self._subscribe(pubsub)
                delay = 0.05
                while not self._closing:
                    with map_redis_errors():
                        message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message.get("data"))
            except CacheUnavailable as exc:
                log.warning("fill notifications interrupted (retrying in %.2f s): %s", delay, exc)
            finally:
                self._subscribed.clear()
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                except REDIS_ERRORS:
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        with map_redis_errors():
            await cluster_ready(self.store.client)
            await pubsub.subscribe(self.store.channel)
            async with asyncio.timeout(5.0):
                while (message := await pubsub.get_message(timeout=1.0)) is None or message["type"] != "subscribe":
                    pass
        self.subscriptions += 1
        self._subscribed.set()
        for watch in self._watches.values():  # anything announced while we were away: re-read the store
            watch.event.set()

    def _deliver(self, data: object) -> None:
        self.messages += 1
        if isinstance(data, bytes):
            watch = self._watches.get(data.decode(errors="replace"))
            if watch is not None:
                watch.event.set()

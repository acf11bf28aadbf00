"""The version service of one process: leader election, the leader's DB poll, and following the map.

Every proxy process runs one :class:`VersionService`:

* **Lease.** Each process tries to take the Redis lease (``SET NX PX`` with a fencing token); the holder
  renews it on every poll. If the leader dies, its lease expires and another process takes it within
  ``versions.lease_ttl``.
* **Leader.** Polls the metadata DB every ``poll_interval`` (the only DB traffic of the whole fleet),
  advances the map (:func:`proxy.versions.model.advance`) and writes it with a fenced, generation-checked
  script that also publishes the delta (or a beat when nothing changed).
* **Everyone** keeps the map in memory: deltas from the channel are applied when they follow the held
  generation; a gap, an unreadable message or a reconnect makes the process reload the whole map. A map
  with a lower generation than the one held is never taken, so exposed versions never go backwards.
* **Without Redis** (embedded mode, or Redis down with ``fallback_poll_interval`` set) the process polls
  the DB itself; otherwise versions are reported unknown and cached views pass through.

DB errors keep the last map (its age grows, see :func:`proxy.versions.model.fresh`), are retried with
backoff and logged once per state change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from cache import CacheUnavailable
from proxy.airflow.snapshot import Snapshot
from proxy.config import VersionsConfig
from proxy.errors import VersionLookupError
from proxy.tasks import spawn
from proxy.versions.codec import Beat, DeltaMessage, decode_message
from proxy.versions.model import LeaderState, VersionMap, accept, advance, apply, bump, fresh
from proxy.versions.redis_store import WRITE_CONFLICT, WRITE_NOT_LEADER, RedisVersionStore

log = logging.getLogger("proxy.versions")

Poll = Callable[[], Awaitable[Snapshot]]
#: Airflow 2's default [core] min_serialized_dag_fetch_interval (10 s) + a 2 s margin
AIRFLOW2_CONVERGENCE = 12.0
Clock = Callable[[], float]


@dataclass
class VersionStats:
    """Counters for the metrics endpoint."""

    polls: int = 0
    poll_errors: int = 0
    statements: int = 0
    poll_seconds: float = 0.0
    last_poll_seconds: float = 0.0
    resyncs: int = 0
    redis_errors: int = 0
    is_leader: bool = False
    leader: str | None = None
    db_error: str | None = None


def instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class VersionService:
    def __init__(
        self,
        config: VersionsConfig,
        poll: Poll,
        store: RedisVersionStore | None,
        *,
        instance: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._config = config
        self._poll = poll
        self._store = store
        self._instance = instance or instance_id()
        self._clock = clock
        self._map: VersionMap | None = None
        self._leader_state: LeaderState | None = None
        self._token: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._db_failing = False
        self._redis_failing = False
        self._ready = asyncio.Event()
        self._closing = False
        self.stats = VersionStats()

    # -- what the rest of the proxy reads ---------------------------------------------------------

    @property
    def current(self) -> VersionMap | None:
        return self._map

    def fresh(self) -> bool:
        return fresh(self._map, self._clock(), self._config.max_version_age)

    def convergence(self, major: int) -> float:
        """The upstream convergence window for Airflow ``major`` (``versions.upstream_convergence``; -1: 12 s for
        Airflow 2, whose workers re-read a DAG 10 s after their own last load, + 2 s margin; 0 for Airflow 3)."""
        configured = self._config.upstream_convergence
        if configured >= 0:
            return configured
        return AIRFLOW2_CONVERGENCE if major == 2 else 0.0

    @property
    def is_leader(self) -> bool:
        return self._token is not None or (self._store is None and self._leader_state is not None)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._store is None:
            self._tasks.append(spawn(self._standalone_loop(self._config.poll_interval), name="versions-standalone"))
            return
        self._tasks.append(spawn(self._lease_loop(), name="versions-lease"))
        self._tasks.append(spawn(self._follow_loop(), name="versions-follow"))

    async def aclose(self) -> None:
        # A flag as well as cancel(): redis-py may swallow a cancellation that lands while a read times out.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        self._tasks.clear()
        if self._token is not None and self._store is not None:
            try:
                await self._store.release(self._token)
            except CacheUnavailable:
                pass
            self._token = None

    def _stopping(self) -> bool:
        return self._closing

    async def wait_ready(self) -> None:
        """Return once a map is known (wrap in ``asyncio.timeout``)."""
        await self._ready.wait()

    # -- read-your-writes ----------------------------------------------------------------------------

    async def bump(self, dag_ids: Iterable[str], *, listing: bool = False) -> None:
        """After a successful write through the proxy: advance those DAGs' state (and the global) version."""
        ids = list(dag_ids)
        if self._store is None or self._redis_failing:
            if self._map is not None:
                self._set_map(bump(self._map, ids, self._clock(), listing=listing)[0])
            return
        try:
            await self._store.bump(ids, self._clock(), listing=listing)
            await self._resync()
        except CacheUnavailable as exc:
            self._redis_down(exc)

    # -- internals -----------------------------------------------------------------------------------

    def _set_map(self, offered: VersionMap) -> None:
        if accept(self._map, offered):
            self._map = offered
            self._ready.set()
        else:
            log.warning(
                "ignored a version map older than the one held (generation %d < %d)",
                offered.generation,
                self._map.generation if self._map else -1,
            )

    async def _poll_once(self) -> Snapshot | None:
        started = time.perf_counter()
        try:
            snapshot = await self._poll()
        except VersionLookupError as exc:
            self.stats.poll_errors += 1
            self.stats.db_error = str(exc)
            if not self._db_failing:
                log.error("metadata DB poll failed; keeping the last versions: %s", exc)
                self._db_failing = True
            return None
        elapsed = time.perf_counter() - started
        self.stats.polls += 1
        self.stats.statements += snapshot.statements
        self.stats.poll_seconds += elapsed
        self.stats.last_poll_seconds = elapsed
        self.stats.db_error = None
        if self._db_failing:
            log.info("metadata DB poll recovered")
            self._db_failing = False
        return snapshot

    def _backoff(self, interval: float) -> float:
        if not self._db_failing:
            return interval
        return min(30.0, max(interval, 1.0) * float(2 ** min(self.stats.poll_errors, 5)))

    async def _standalone_loop(self, interval: float) -> None:
        while not self._closing:
            snapshot = await self._poll_once()
            if snapshot is not None:
                self._leader_state, _ = advance(
                    self._leader_state,
                    snapshot,
                    self._clock(),
                    state_max_age=self._config.state_max_age,
                    convergence=self.convergence(snapshot.schema.major),
                )
                self._set_map(self._leader_state.map)
            await asyncio.sleep(self._backoff(interval))

    async def _lease_loop(self) -> None:
        assert self._store is not None
        store = self._store
        ttl_ms = int(self._config.lease_ttl * 1000)
        expected: int | None = None
        fallback: asyncio.Task[None] | None = None
        while not self._closing:
            try:
                if self._token is None:
                    self._token = await store.try_acquire(self._instance, ttl_ms)
                    if self._token is not None:
                        self._leader_state = await store.load_leader_state()
                        expected = self._leader_state.map.generation if self._leader_state else None
                        log.info("became the version leader (%s)", self._token)
                    self.stats.leader = await store.leader()
                elif not await store.renew(self._token, ttl_ms):
                    log.warning("lost the version leader lease")
                    self._token = None
                    continue
                if fallback is not None:
                    fallback.cancel()
                    self._tasks.remove(fallback)
                    fallback = None
                self._redis_recovered()
                self.stats.is_leader = self._token is not None
                if self._token is None:
                    await asyncio.sleep(self._config.lease_ttl / 5)
                    continue
                self.stats.leader = self._token
                snapshot = await self._poll_once()
                if snapshot is None:
                    if self._leader_state is not None:
                        await store.beat(self._leader_state.map, self.stats.db_error)
                    await asyncio.sleep(self._backoff(self._config.poll_interval))
                    continue
                state, delta = advance(
                    self._leader_state,
                    snapshot,
                    self._clock(),
                    state_max_age=self._config.state_max_age,
                    convergence=self.convergence(snapshot.schema.major),
                )
                result = await store.write(self._token, expected, state, delta)
                if result == WRITE_CONFLICT:
                    self._leader_state = await store.load_leader_state()
                    expected = self._leader_state.map.generation if self._leader_state else None
                    continue
                if result == WRITE_NOT_LEADER:
                    log.warning("version leader lease expired before the write; stepping down")
                    self._token = None
                    continue
                self._leader_state, expected = state, state.map.generation
                self._set_map(state.map)
                await asyncio.sleep(self._config.poll_interval)
            except CacheUnavailable as exc:
                self._redis_down(exc)
                self._token = None
                self.stats.is_leader = False
                if self._config.fallback_poll_interval > 0 and fallback is None:
                    log.warning("polling the metadata DB from this process until Redis is back")
                    fallback = spawn(self._standalone_loop(self._config.fallback_poll_interval), name="fallback")
                    self._tasks.append(fallback)
                await asyncio.sleep(min(self._config.lease_ttl / 5, 1.0))

    async def _resync(self) -> None:
        assert self._store is not None
        loaded = await self._store.load_map()
        self.stats.resyncs += 1
        if loaded is not None:
            self._set_map(loaded)

    async def _follow_loop(self) -> None:
        assert self._store is not None
        while not self._closing:
            try:
                subscribed = False
                async for raw in self._store.subscribe():
                    if self._stopping():
                        break
                    if not subscribed:
                        subscribed = True  # the first item says: subscribed; now read the whole map once
                        await self._resync()
                        self._redis_recovered()
                        continue
                    if raw:
                        await self._on_message(raw)
            except CacheUnavailable as exc:
                self._redis_down(exc)
                await asyncio.sleep(0.5)

    async def _on_message(self, raw: bytes) -> None:
        message = decode_message(raw)
        held = self._map
        match message:
            case DeltaMessage() if held is not None and message.delta.previous_generation == held.generation:
                self._set_map(
                    apply(
                        held,
                        message.delta,
                        generation=message.generation,
                        global_version=message.global_version,
                        schema=message.schema,
                        polled_at=message.polled_at,
                    )
                )
            case DeltaMessage() if held is not None and message.generation <= held.generation:
                pass  # already have it (our own write, or a reload got there first)
            case Beat() if held is not None and message.generation == held.generation:
                if message.polled_at > held.polled_at:
                    self._map = replace(held, polled_at=message.polled_at)
                self.stats.db_error = message.db_error
            case Beat() if held is not None and message.generation < held.generation:
                pass
            case _:
                await self._resync()

    def _redis_down(self, exc: CacheUnavailable) -> None:
        self.stats.redis_errors += 1
        if not self._redis_failing:
            log.error("Redis unavailable for versions: %s", exc)
            self._redis_failing = True

    def _redis_recovered(self) -> None:
        if self._redis_failing:
            log.info("Redis available again for versions")
            self._redis_failing = False

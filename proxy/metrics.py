"""Prometheus metrics (prometheus-client): what the proxy counts, and where the admin listener reads it.

* :class:`Telemetry` owns the metric objects of one process. Requests, upstream calls and Redis reads are
  recorded as they happen (:meth:`Telemetry.request`, :meth:`Telemetry.upstream`, :meth:`Telemetry.redis`);
  state that already lives in plain counters (the version service's :class:`~proxy.versions.service.VersionStats`,
  the cache layer's counters and breaker, the L1 store) is copied once a second by :meth:`Telemetry.sample`.
* Labels are bounded: ``route`` is a route *name* of the route table (``api.dag.tasks``), ``other`` for a
  GET the table does not know, ``passthrough`` for any other method; never a DAG id, a user or a raw path.
* With ``--workers N`` each worker writes its values to files in a private directory
  (``PROMETHEUS_MULTIPROC_DIR``, created by the supervisor before it spawns the workers) and the admin
  listener, in the supervisor, aggregates them (:func:`multiprocess_registry`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from cache import CachedResponse, CacheStore, CacheUnavailable, Outcome
from proxy.requests import Reject, split_target
from proxy.routes import RouteTable
from proxy.tasks import spawn

if TYPE_CHECKING:
    from cache import MemoryCacheStore
    from proxy.caching import CacheLayer
    from proxy.versions.service import VersionService

log = logging.getLogger("proxy.metrics")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: The closed set of cache outcomes (the ``X-Cache`` values, ``304`` for an ``If-None-Match`` answered
#: from the key alone); anything else counts as ``BYPASS``.
OUTCOMES: Final = ("HIT", "MISS", "BYPASS", "STALE", "SHADOW", "304")
FROM_CACHE: Final = frozenset({"HIT", "STALE", "304"})
OTHER: Final = "other"
PASSTHROUGH: Final = "passthrough"

_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


# -- pure helpers ---------------------------------------------------------------------------------


def route_label(method: str, raw_path: str, base_path: str, table: RouteTable) -> str:
    """The ``route`` label of a request: its route's name, ``other`` or ``passthrough``."""
    if method not in ("GET", "HEAD"):
        return PASSTHROUGH
    path = raw_path.partition("?")[0]  # the query never changes the route: skip parsing it
    if "%" in path or "/." in path:
        target = split_target(path, base_path)
        if isinstance(target, Reject):
            return OTHER
        path = target.path
    elif base_path.strip("/"):
        prefix = "/" + base_path.strip("/")
        if path != prefix and not path.startswith(prefix + "/"):
            return OTHER
        path = path[len(prefix) :] or "/"
    found = table.classify(path)
    return found.route.name if found is not None else OTHER


def outcome_of(status: int, x_cache: str | None) -> str:
    """The ``outcome`` label from the response's ``X-Cache`` header (absent: pass-through = ``BYPASS``)."""
    if x_cache == "HIT" and status == 304:
        return "304"
    if x_cache is not None and x_cache in OUTCOMES:
        return x_cache
    return "BYPASS"


# -- per-request note -----------------------------------------------------------------------------


@dataclass(slots=True)
class RequestNote:
    """What telemetry and the access log learn about one request (route label, outcome, key digest)."""

    route: str = OTHER
    outcome: str | None = None
    key: str | None = None  # the entry's ETag: a digest of the cache key, safe to log
    fill: str | None = None  # how the single fill of a MISS went (cache.Outcome value)


NOTE: Final = web.RequestKey("dagcache_note", RequestNote)


def note_of(request: web.BaseRequest) -> RequestNote | None:
    value = request.get(NOTE)
    return value if isinstance(value, RequestNote) else None


def note_fill(request: web.BaseRequest, outcome: Outcome) -> None:
    """Record how the single fill behind this request's MISS went (one call in :mod:`proxy.caching`)."""
    note = note_of(request)
    if note is not None:
        note.fill = outcome.value


# -- the metrics ------------------------------------------------------------------------------------


@dataclass
class Sources:
    """What :meth:`Telemetry.sample` copies from (filled in by :mod:`proxy.app` as the services start)."""

    versions: VersionService | None = None
    layer: CacheLayer | None = None
    l1: MemoryCacheStore | None = None


@dataclass
class _Seen:
    values: dict[str, float] = field(default_factory=dict)

    def delta(self, name: str, value: float) -> float:
        before = self.values.get(name, 0.0)
        self.values[name] = value
        return value - before if value > before else 0.0


class Telemetry:
    """The metric objects of one process. Cheap calls; never raises into the request path."""

    _default: Telemetry | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sources = Sources()
        self._seen = _Seen()
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        r = self.registry
        self.requests = Counter(
            "dagcache_requests",
            "Client requests by route, cache outcome and status",
            ["route", "outcome", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "dagcache_request_seconds",
            "Time to answer a client request (headers and body handed to aiohttp)",
            ["route", "outcome"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.served_bytes = Counter(
            "dagcache_cache_served_bytes",
            "Body bytes answered from the cache (HIT/STALE), not fetched upstream",
            registry=r,
        )
        self.upstream_requests = Counter(
            "dagcache_upstream_requests",
            "Requests sent to the upstream, by route and status ('error': no answer)",
            ["route", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "dagcache_upstream_seconds",
            "Upstream time to response headers (or to the error)",
            ["route"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "dagcache_redis_seconds", "Redis cache-store operations", ["op"], buckets=_REDIS_BUCKETS, registry=r
        )
        self.redis_errors = Counter(
            "dagcache_redis_errors",
            "Redis errors by operation ('versions': the version service)",
            ["op"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "dagcache_redis_breaker_open",
            "1 while the Redis circuit breaker is open (cached views pass through)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.fill_seconds = Histogram(
            "dagcache_fill_seconds",
            "MISS requests by how their single fill went: filled (fetched it), shared (waited for another "
            "request's fill, in this process or another), fallback (fetched without coordination)",
            ["outcome"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.shadow = Counter(
            "dagcache_shadow",
            "Shadow mode: requests Airflow answered, by what the cache would have answered (HIT or MISS)",
            ["would"],
            registry=r,
        )
        self.l1_bytes = Gauge(
            "dagcache_l1_bytes", "Bytes held by the in-process L1", registry=r, multiprocess_mode="livesum"
        )
        self.l1_max_bytes = Gauge(
            "dagcache_l1_max_bytes", "L1 capacity in bytes", registry=r, multiprocess_mode="livesum"
        )
        self.l1_entries = Gauge(
            "dagcache_l1_entries", "Entries held by the in-process L1", registry=r, multiprocess_mode="livesum"
        )
        self.l1_evictions = Counter("dagcache_l1_evictions", "L1 entries pushed out to make room", registry=r)
        self.polls = Counter(
            "dagcache_version_polls", "Metadata DB polls by result (only the leader polls)", ["result"], registry=r
        )
        self.poll_seconds = Counter("dagcache_version_poll_seconds", "Total time spent in DB polls", registry=r)
        self.poll_statements = Counter("dagcache_version_poll_statements", "SQL statements run by DB polls", registry=r)
        self.last_poll_seconds = Gauge(
            "dagcache_version_last_poll_seconds",
            "Duration of the latest DB poll",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.polled_at = Gauge(
            "dagcache_version_polled_at_seconds",
            "Unix time of the DB poll behind the versions held (0: none yet; the stalest worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.generation = Gauge(
            "dagcache_version_generation",
            "Generation of the version map held",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dags = Gauge(
            "dagcache_version_dags", "DAGs in the version map held", registry=r, multiprocess_mode="livemax"
        )
        self.leader = Gauge(
            "dagcache_version_leader",
            "Processes of this instance that hold the version leader lease",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.up = Gauge(
            "dagcache_process_up",
            "1 per live serving process (with --workers N, one sample per worker pid)",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.resyncs = Counter("dagcache_version_resyncs", "Full reloads of the version map from Redis", registry=r)

    @classmethod
    def default(cls) -> Telemetry:
        """The process's telemetry (shared by the proxy app and, in one-process mode, the admin listener)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    # -- events ---------------------------------------------------------------------------------

    def begin(self, request: web.Request, base_path: str, table: RouteTable) -> RequestNote:
        """Label ``request`` (its route) before it is handled; the note travels with the request."""
        note = RequestNote(route_label(request.method, request.raw_path, base_path, table))
        request[NOTE] = note
        return note

    def finish(self, request: web.Request, response: web.StreamResponse, seconds: float) -> None:
        """Count a request that got ``response`` after ``seconds``."""
        note = note_of(request) or RequestNote()
        note.outcome = outcome_of(response.status, response.headers.get("X-Cache"))
        if note.fill is not None:
            self.fill_seconds.labels(note.fill).observe(seconds)
        elif note.outcome == "SHADOW" and (would := response.headers.get("X-Dagcache-Shadow")) in ("HIT", "MISS"):
            self.shadow.labels(would).inc()
        if note.outcome in FROM_CACHE or note.outcome == "MISS":
            note.key = response.headers.get("ETag")
        body = 0
        if request.method != "HEAD" and isinstance(response, web.Response):
            body = response.content_length or 0
        self.request(note.route, note.outcome, response.status, seconds, body)

    def upstream_of(self, request: web.BaseRequest, status: int | None, seconds: float) -> None:
        note = note_of(request)
        self.upstream(note.route if note is not None else OTHER, status, seconds)

    def request(self, route: str, outcome: str, status: int, seconds: float, body_bytes: int = 0) -> None:
        children = self._children.get((route, outcome, status))
        if children is None:  # labels() costs a lock and a tuple per call: keep the children (a bounded set)
            children = self.requests.labels(route, outcome, str(status)), self.request_seconds.labels(route, outcome)
            self._children[(route, outcome, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if body_bytes and outcome in ("HIT", "STALE"):
            self.served_bytes.inc(body_bytes)

    def upstream(self, route: str, status: int | None, seconds: float) -> None:
        self.upstream_requests.labels(route, "error" if status is None else str(status)).inc()
        self.upstream_seconds.labels(route).observe(seconds)

    def redis(self, op: str, seconds: float, ok: bool) -> None:
        self.redis_seconds.labels(op).observe(seconds)
        if not ok:
            self.redis_errors.labels(op).inc()

    # -- sampled state ----------------------------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Copy the state of :attr:`sources` into the metrics (called about once a second)."""
        seen = self._seen
        self.up.set(1)
        versions, layer, l1 = self.sources.versions, self.sources.layer, self.sources.l1
        if versions is not None:
            stats = versions.stats
            self.polls.labels("ok").inc(seen.delta("polls", stats.polls))
            self.polls.labels("error").inc(seen.delta("poll_errors", stats.poll_errors))
            self.poll_seconds.inc(seen.delta("poll_seconds", stats.poll_seconds))
            self.poll_statements.inc(seen.delta("statements", stats.statements))
            self.resyncs.inc(seen.delta("resyncs", stats.resyncs))
            self.redis_errors.labels("versions").inc(seen.delta("redis_errors", stats.redis_errors))
            if stats.polls:
                self.last_poll_seconds.set(stats.last_poll_seconds)
            self.leader.set(1 if versions.is_leader else 0)
            current = versions.current
            if current is not None:
                self.polled_at.set(current.polled_at)
                self.generation.set(current.generation)
                self.dags.set(len(current.dags))
        if layer is not None:
            breaker = layer.breaker
            clock = time.monotonic() if now is None else now
            opened = breaker.opened_at is not None and clock - breaker.opened_at < breaker.cooldown
            self.breaker_open.set(1 if opened else 0)
        if l1 is not None:
            self.l1_bytes.set(l1.bytes)
            self.l1_max_bytes.set(l1.max_bytes)
            self.l1_entries.set(len(l1))
            self.l1_evictions.inc(seen.delta("evictions", l1.evictions))


def sample_every(
    interval: float, key: web.AppKey[Telemetry]
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """A ``cleanup_ctx`` that runs :meth:`Telemetry.sample` every ``interval`` seconds while the app runs."""

    @asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        telemetry = app[key]

        async def loop() -> None:
            failing = False
            while True:
                try:
                    telemetry.sample()
                    failing = False
                except Exception:  # a bug here must not stop the sampling for good
                    if not failing:
                        log.exception("sampling the metrics failed")
                    failing = True
                await asyncio.sleep(interval)

        task = spawn(loop(), name="telemetry-sample")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that reads what every worker wrote under ``path`` (the supervisor's ``/metrics``)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def sample_names(registry: CollectorRegistry) -> Iterable[str]:
    """Every sample name the registry exposes (for tests and the status page)."""
    for family in registry.collect():
        for sample in family.samples:
            yield sample.name


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class TimedStore:
    """A :class:`cache.CacheStore` that records each operation of the store it wraps (the Redis tier)."""

    def __init__(self, inner: CacheStore, telemetry: Telemetry) -> None:
        self._inner = inner
        self._telemetry = telemetry

    async def get(self, key: str) -> CachedResponse | None:
        started = time.perf_counter()
        try:
            entry = await self._inner.get(key)
        except CacheUnavailable:
            self._telemetry.redis("get", time.perf_counter() - started, False)
            raise
        self._telemetry.redis("get", time.perf_counter() - started, True)
        return entry

    async def put(self, key: str, entry: CachedResponse, ttl: float) -> None:
        started = time.perf_counter()
        try:
            await self._inner.put(key, entry, ttl)
        except CacheUnavailable:
            self._telemetry.redis("put", time.perf_counter() - started, False)
            raise
        self._telemetry.redis("put", time.perf_counter() - started, True)

    async def aclose(self) -> None:
        await self._inner.aclose()


def mark_dead(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges (its counters stay: they still count toward the totals)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]

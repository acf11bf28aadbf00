"""The admin listener (its own port): probes, ``/metrics``, the status page.

* ``/healthz`` (liveness) looks at this process alone — and, with ``--workers N``, at whether the worker
  processes are alive. It never touches Redis, the DB or the upstream: a liveness probe that fails when a
  dependency is slow gets pods restarted under exactly the load they exist to absorb (apache/airflow#54850).
* ``/readyz`` (readiness) answers 200 when the upstream answers HTTP at all (any status below 500 on
  ``upstream.readiness_path``; cached for ``admin.readiness_cache`` seconds so probes from many kubelets
  cost the upstream at most one request per interval). The body says whether views are served from the cache
  (``"mode": "cache"``: versions polled at most ``versions.max_version_age`` ago, in every worker) or pass
  through (no ``[database] url``, ``cache.mode = "off"``, or versions stale: DB or Redis trouble). Stale
  versions make the probe fail only with ``[admin] ready_requires_versions = true``: every replica shares the
  DB and Redis, so by default their outage must not empty the Service while each replica can still pass
  requests through.
* ``/metrics``: Prometheus text (with ``--workers N``, aggregated over every worker); the same numbers go to
  StatsD when ``[metrics] statsd`` is set (:mod:`proxy.statsd`) and to an OpenTelemetry collector when
  ``[metrics] otlp_endpoint`` is set (:mod:`proxy.otel`, the ``otel`` extra).
* ``/`` and ``/status.json``: the status page (:mod:`proxy.status`) and the same numbers for scripts.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Metric, generate_latest

from cache import CacheUnavailable
from cache.redis_store import RedisClient
from proxy.app import make_redis
from proxy.config import OTEL_MISSING, Settings, parse_otlp_headers
from proxy.errors import ConfigError
from proxy.metrics import Telemetry
from proxy.statsd import StatsdPusher, run_pusher
from proxy.status import Samples, Status, pass_through_reason, readiness, render_html, summarize
from proxy.versions.redis_store import RedisVersionStore

log = logging.getLogger("proxy.admin")

Liveness = Callable[[], tuple[bool, dict[str, object]]]


def _alive() -> tuple[bool, dict[str, object]]:
    return True, {}


@dataclass
class _Probe:
    ok: bool
    detail: str
    at: float


class ReadinessProbe:
    """Checks that the upstream answers; remembers the answer for a short while."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._url = settings.upstream.url + settings.upstream.readiness_path
        self._ttl = settings.admin.readiness_cache
        self._timeout = aiohttp.ClientTimeout(total=min(settings.upstream.connect_timeout + 2.0, 10.0))
        self._last: _Probe | None = None

    async def check(self) -> _Probe:
        now = time.monotonic()
        if self._last is not None and now - self._last.at < self._ttl:
            return self._last
        try:
            async with self._session.get(self._url, allow_redirects=False, timeout=self._timeout) as resp:
                ok = resp.status < 500
                detail = f"upstream answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, detail = False, f"upstream unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
        self._last = _Probe(ok, detail, time.monotonic())
        return self._last


class LeaderLookup:
    """Who holds the version lease, read from the fleet's Redis (the admin may run where no versions do)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: RedisClient | None = None

    async def look(self) -> tuple[str | None, str]:
        """``(leader, Redis state)``; never raises."""
        if not self._settings.redis.url:
            return None, "not configured (embedded store)"
        if self._client is None:
            self._client = make_redis(self._settings.redis)
        store = RedisVersionStore(self._client, self._settings.redis.key_prefix)
        try:
            async with asyncio.timeout(self._settings.redis.connect_timeout + 1.0):
                return await store.leader(), "reachable"
        except (CacheUnavailable, TimeoutError) as exc:
            return None, f"unreachable ({str(exc) or type(exc).__name__})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


PROBE = web.AppKey("readiness_probe", ReadinessProbe)
LIVENESS: web.AppKey[Liveness] = web.AppKey("liveness")
ADMIN_SETTINGS = web.AppKey("admin_settings", Settings)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
LEADER = web.AppKey("leader_lookup", LeaderLookup)


async def _probe_ctx(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    app[PROBE] = ReadinessProbe(session, app[ADMIN_SETTINGS])
    app[LEADER] = LeaderLookup(app[ADMIN_SETTINGS])
    yield
    await session.close()
    await app[LEADER].aclose()


async def _statsd_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[ADMIN_SETTINGS].metrics
    pusher = StatsdPusher(app[REGISTRY], config.statsd, prefix=config.statsd_prefix, tags=config.statsd_tags)
    async for _ in run_pusher(pusher, config.statsd_interval):
        yield


async def _otlp_ctx(app: web.Application) -> AsyncIterator[None]:
    try:
        from proxy import otel  # the optional extra: imported only when configured
    except ImportError:
        raise ConfigError(OTEL_MISSING) from None
    config = app[ADMIN_SETTINGS].metrics
    pusher = otel.OtlpPusher(
        app[REGISTRY],
        config.otlp_endpoint,
        headers=parse_otlp_headers(config.otlp_headers) or None,  # None: the exporter reads OTEL_EXPORTER_OTLP_*
        timeout=min(config.otlp_interval, 10.0),
    )
    async for _ in otel.run_pusher(pusher, config.otlp_interval):
        yield


async def healthz(request: web.Request) -> web.Response:
    ok, detail = request.app[LIVENESS]()
    return web.json_response({"status": "ok" if ok else "unhealthy", **detail}, status=200 if ok else 503)


class _Collected:
    """Already collected families, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


async def collect_families(registry: CollectorRegistry, attempts: int = 3) -> list[Metric]:
    """The registry's families. With ``--workers N`` a worker that is starting creates its value file while
    this reads it (prometheus-client's files are not written atomically): that read fails; read again."""
    for attempt in range(attempts):
        try:
            return list(registry.collect())
        except (struct.error, RuntimeError, ValueError, OSError) as exc:
            if attempt == attempts - 1:
                raise
            log.debug("reading the metrics failed (%s); retrying", exc)
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


def _pass_through(settings: Settings) -> str | None:
    return pass_through_reason(database_url=settings.database.url, cache_mode=settings.cache.mode)


async def readyz(request: web.Request) -> web.Response:
    settings = request.app[ADMIN_SETTINGS]
    probe = await request.app[PROBE].check()
    ok, body = readiness(
        probe.ok,
        probe.detail,
        pass_through=_pass_through(settings),
        samples=Samples.of(await collect_families(request.app[REGISTRY])),
        now=time.time(),
        max_age=settings.versions.max_version_age,
        require_versions=settings.admin.ready_requires_versions,
    )
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(_Collected(await collect_families(request.app[REGISTRY])))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _status(request: web.Request) -> Status:
    settings = request.app[ADMIN_SETTINGS]
    leader, redis_state = await request.app[LEADER].look()
    mode = _pass_through(settings) or ("cache (Redis)" if settings.redis.url else "cache (embedded in-process store)")
    _, process = request.app[LIVENESS]()
    return summarize(
        Samples.of(await collect_families(request.app[REGISTRY])),
        now=time.time(),
        mode=mode,
        leader=leader,
        redis_state=redis_state,
        process=process,
    )


async def status_page(request: web.Request) -> web.Response:
    return web.Response(text=render_html(await _status(request)), content_type="text/html")


async def status_json(request: web.Request) -> web.Response:
    return web.json_response((await _status(request)).as_dict())


def create_admin_app(
    settings: Settings, liveness: Liveness = _alive, registry: CollectorRegistry | None = None
) -> web.Application:
    """``registry``: where ``/metrics`` reads (default: this process's :meth:`Telemetry.default`)."""
    app = web.Application()
    app[ADMIN_SETTINGS] = settings
    app[LIVENESS] = liveness
    app[REGISTRY] = registry if registry is not None else Telemetry.default().registry
    app.cleanup_ctx.append(_probe_ctx)
    if settings.metrics.statsd:
        app.cleanup_ctx.append(_statsd_ctx)
    if settings.metrics.otlp_endpoint:
        app.cleanup_ctx.append(_otlp_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/", status_page)
    return app


async def start_admin(
    settings: Settings, liveness: Liveness = _alive, registry: CollectorRegistry | None = None
) -> web.AppRunner:
    """Start the admin listener; the caller cleans up the returned runner."""
    runner = web.AppRunner(create_admin_app(settings, liveness, registry), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.admin.host, settings.admin.port, reuse_address=True).start()
    return runner

"""Composition root: the only place that builds clients (the upstream ``ClientSession``, the Redis client,
the metadata DB engine) and hands them down. State lives under typed ``AppKey``s; resources open and close
in ``cleanup_ctx``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from cache import FillNotifier, LocalFillCoordinator, MemoryCacheStore, RedisCacheStore
from cache.redis_store import REDIS_ERRORS, RedisClient
from proxy.airflow import routes3
from proxy.airflow.profiles import table_for
from proxy.airflow.source import SqlVersionSource
from proxy.caching import CacheLayer
from proxy.config import RedisConfig, Settings, redact_url
from proxy.database import make_engine
from proxy.handler import ProxyHandler
from proxy.limits import Limits
from proxy.metrics import Telemetry, TimedStore, sample_every
from proxy.redisurl import parse_redis_url
from proxy.upstream import Upstream
from proxy.versions.redis_store import RedisVersionStore
from proxy.versions.service import VersionService

log = logging.getLogger("proxy.app")

SETTINGS = web.AppKey("settings", Settings)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", Upstream)
HANDLER = web.AppKey("handler", ProxyHandler)
VERSIONS = web.AppKey("versions", VersionService)
CACHE = web.AppKey("cache", CacheLayer)
TELEMETRY = web.AppKey("telemetry", Telemetry)


def limits_of(settings: Settings) -> Limits:
    server = settings.server
    return Limits(
        max_url_length=server.max_url_length,
        max_header_size=server.max_header_size,
        max_header_count=server.max_header_count,
        max_body_size=server.max_body_size,
    )


def make_client_session(settings: Settings) -> aiohttp.ClientSession:
    """The pooled upstream session: no cookie jar (cookies belong to clients), no decompression."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream.pool_size,
        limit_per_host=0,
        ttl_dns_cache=10,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        read_bufsize=256 * 1024,
        max_line_size=max(settings.server.max_url_length, 8190),
        max_field_size=max(settings.server.max_header_size, 8190),
    )


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = make_client_session(settings)
    app[CLIENT_SESSION] = session
    app[UPSTREAM] = Upstream(session, settings.upstream, settings.server, app[TELEMETRY])
    app[HANDLER] = ProxyHandler(app[UPSTREAM], limits_of(settings))
    yield
    await session.close()


class SentinelMasterClient(aioredis.Redis):
    """The Sentinel master's client; closing it also closes the connections to the sentinels, which redis-py's
    ``Sentinel`` opens for discovery and otherwise leaves open."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def make_redis(config: RedisConfig) -> RedisClient:
    """The Redis client for ``config.url``: one server (redis://, rediss://, unix://), the master named by
    Sentinel (redis+sentinel://) or a Redis Cluster (redis+cluster://); see :mod:`proxy.redisurl`."""
    target = parse_redis_url(config.url)
    common: dict[str, Any] = {
        "socket_connect_timeout": config.connect_timeout,
        "socket_timeout": config.connect_timeout,
        "health_check_interval": 10,
        # One quick retry: a Redis outage must turn into pass-through fast, not after redis-py's default
        # ten retries with backoff.
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
    }
    password = target.password or config.password or None
    if target.topology == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=password,
            ssl=target.tls,
            **common,
        )
    if target.topology == "sentinel":
        # The sentinels get the same quick retry: redis-py's default (3 retries, backoff up to 10 s) makes one
        # command take ~15 s when no sentinel answers.
        discovery: dict[str, Any] = {"socket_connect_timeout": config.connect_timeout}
        discovery.update(socket_timeout=config.connect_timeout, ssl=target.tls, retry=common["retry"])
        sentinel = Sentinel(target.nodes, sentinel_kwargs=discovery, **common)  # type: ignore[no-untyped-call, unused-ignore]
        # ssl=True makes the pool use SentinelManagedSSLConnection for the master.
        master: SentinelMasterClient = sentinel.master_for(
            target.service_name,
            redis_class=SentinelMasterClient,
            db=target.db,
            username=target.username,
            password=password,
            ssl=target.tls,
        )
        return master
    return aioredis.Redis.from_url(config.url, password=config.password or None, **common)


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    """DAG versions and the cache, when a metadata DB is configured (otherwise everything passes through)."""
    settings = app[SETTINGS]
    if not settings.database.url:
        yield
        return
    engine = make_engine(settings.database, pool_size=1)  # connects lazily: only the leader ever does
    source = SqlVersionSource(
        engine,
        statement_timeout=settings.versions.statement_timeout,
        ignore_parse_time=settings.versions.ignore_parse_time,
    )
    client = make_redis(settings.redis) if settings.redis.url else None
    store = RedisVersionStore(client, settings.redis.key_prefix) if client is not None else None
    if store is None:
        log.info(
            "no Redis configured: embedded in-process store; versions polled from %s by this process",
            redact_url(settings.database.url),
        )
    versions = VersionService(settings.versions, source.poll, store)
    app[VERSIONS] = versions
    app[TELEMETRY].sources.versions = versions
    await versions.start()
    notifier: FillNotifier | None = None
    if settings.cache.mode != "off":
        layer, notifier = await _cache_layer(app, versions, client)
        app[CACHE] = layer
        app[TELEMETRY].sources.layer = layer
        app[HANDLER] = ProxyHandler(app[UPSTREAM], limits_of(settings), layer)
    yield
    if notifier is not None:
        await notifier.aclose()
    await versions.aclose()
    if client is not None:
        await client.aclose()
    await engine.dispose()


async def _cache_layer(
    app: web.Application, versions: VersionService, client: RedisClient | None
) -> tuple[CacheLayer, FillNotifier | None]:
    settings = app[SETTINGS]
    config = settings.cache
    prefix = settings.redis.key_prefix
    upstream = settings.upstream
    lock_ttl = (upstream.read_timeout or 300.0) + upstream.connect_timeout + 5.0
    l1: MemoryCacheStore | None
    shared: MemoryCacheStore | RedisCacheStore
    coordinator: LocalFillCoordinator | FillNotifier
    notifier: FillNotifier | None = None
    if client is None:
        # Embedded store: one in-process store is both tiers; single fills are per process.
        l1, shared, coordinator = (
            None,
            MemoryCacheStore(max(config.l1_max_bytes, 64 * 1024 * 1024)),
            LocalFillCoordinator(),
        )
        secret = config.secret or secrets.token_hex(32)
    else:
        shared = RedisCacheStore(client, prefix=prefix, default_ttl=config.ttl)
        coordinator = notifier = FillNotifier(shared)
        await notifier.start()
        l1 = MemoryCacheStore(config.l1_max_bytes) if config.l1_max_bytes else None
        secret = config.secret or await _fleet_secret(client, prefix)
    app[TELEMETRY].sources.l1 = l1 if l1 is not None else shared if isinstance(shared, MemoryCacheStore) else None
    layer = CacheLayer(
        table=routes3.TABLE,
        versions=versions,
        upstream=app[UPSTREAM],
        l1=l1,
        shared=shared if client is None else TimedStore(shared, app[TELEMETRY]),
        coordinator=coordinator,
        config=config,
        server=settings.server,
        versions_config=settings.versions,
        secret=secret.encode(),
        namespace=prefix,
        lock_ttl=lock_ttl,
        admin_token=settings.admin.token,
        profile=settings.upstream.profile,
    )
    return layer, notifier


async def _fleet_secret(client: RedisClient, prefix: str) -> str:
    """The HMAC key for credential scopes, the same for every replica: created once in Redis (or, if Redis
    is down at start, a per-process one: entries are then not shared, never wrong)."""
    key = "{" + prefix + "}:scope-secret"
    try:
        await client.set(key, secrets.token_hex(32), nx=True)
        value = await client.get(key)
    except REDIS_ERRORS as exc:
        log.warning("cannot read the fleet's scope secret from Redis (%s); using a per-process one", exc)
        return secrets.token_hex(32)
    return value.decode() if isinstance(value, bytes) else str(value)


def create_app(settings: Settings, telemetry: Telemetry | None = None) -> web.Application:
    """The client-facing proxy application."""
    app = web.Application(client_max_size=settings.server.max_body_size or 2**63)
    app[SETTINGS] = settings
    app[TELEMETRY] = telemetry if telemetry is not None else Telemetry.default()
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_services_ctx)
    app.cleanup_ctx.append(sample_every(1.0, TELEMETRY))

    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    telemetry, settings, started = request.app[TELEMETRY], request.app[SETTINGS], time.perf_counter()
    versions = request.app.get(VERSIONS)
    table = table_for(settings.upstream.profile, versions.current if versions else None, routes3.TABLE)
    telemetry.begin(request, settings.server.base_path, table)
    response = await request.app[HANDLER](request)
    telemetry.finish(request, response, time.perf_counter() - started)
    return response

"""``dagcache versions``: the fleet's map from Redis, or a one-off poll of the metadata DB."""

from __future__ import annotations

import logging
import time

from cache import CacheUnavailable
from proxy.airflow.source import SqlVersionSource
from proxy.app import make_redis
from proxy.config import Settings
from proxy.database import make_engine
from proxy.errors import ConfigError
from proxy.versions.model import VersionMap, advance, fresh
from proxy.versions.redis_store import RedisVersionStore

log = logging.getLogger("proxy.versions")


async def read_versions(settings: Settings) -> tuple[VersionMap, str, str | None]:
    """``(map, where it came from, leader)``. Prefers the fleet's map in Redis while it is fresh."""
    if settings.redis.url:
        client = make_redis(settings.redis)
        store = RedisVersionStore(client, settings.redis.key_prefix)
        try:
            stored, leader = await store.load_map(), await store.leader()
        except CacheUnavailable as exc:
            stored, leader = None, None
            log.warning("%s", exc)
        finally:
            await client.aclose()
        if stored is not None and (
            fresh(stored, time.time(), settings.versions.max_version_age) or not settings.database.url
        ):
            return stored, "Redis (the fleet's map)", leader
    if not settings.database.url:
        raise ConfigError("dagcache versions needs [database] url, or the [redis] url of a running dagcache fleet")
    engine = make_engine(settings.database, pool_size=1)
    try:
        source = SqlVersionSource(
            engine,
            statement_timeout=settings.versions.statement_timeout,
            ignore_parse_time=settings.versions.ignore_parse_time,
        )
        snapshot = await source.poll()
    finally:
        await engine.dispose()
    state, _ = advance(None, snapshot, time.time(), state_max_age=settings.versions.state_max_age)
    return state.map, "the metadata DB (one-off poll; a running fleet numbers versions itself)", None

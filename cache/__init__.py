"""dagcache's storage library: stores, keys and entries. Knows nothing of aiohttp, Airflow or SQL.

``RedisCacheStore``, ``FillNotifier`` and ``map_redis_errors`` are loaded lazily from ``cache.redis_store`` (the
only module that imports ``redis``), so importing the pure parts of the package never imports redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cache.entry import CachedResponse, compress_variants, decode, encode, size
from cache.errors import CacheError, CacheUnavailable, CorruptEntry
from cache.keys import CacheKey
from cache.singleflight import FillCoordinator, LocalFillCoordinator, Outcome, fill_once
from cache.store import CacheStore, MemoryCacheStore

if TYPE_CHECKING:
    from cache.redis_store import FillNotifier, RedisCacheStore, map_redis_errors

_LAZY = frozenset({"FillNotifier", "RedisCacheStore", "map_redis_errors"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("cache.redis_store"), name)
    raise AttributeError(f"module 'cache' has no attribute {name!r}")


__all__ = [
    # errors
    "CacheError",
    "CacheUnavailable",
    "CorruptEntry",
    # entries
    "CachedResponse",
    "compress_variants",
    "decode",
    "encode",
    "size",
    # keys
    "CacheKey",
    # stores
    "CacheStore",
    "MemoryCacheStore",
    "RedisCacheStore",
    # single fill
    "FillCoordinator",
    "FillNotifier",
    "LocalFillCoordinator",
    "Outcome",
    "fill_once",
    "map_redis_errors",
]

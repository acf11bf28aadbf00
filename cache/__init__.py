"""dagcache's storage library: stores, keys and entries. Knows nothing of aiohttp, Airflow or SQL."""

from cache.errors import CacheError, CacheUnavailable, CorruptEntry

__all__ = ["CacheError", "CacheUnavailable", "CorruptEntry"]

"""Airflow's metadata DB URL -> an async SQLAlchemy engine (read only, tiny pool).

Airflow's ``sql_alchemy_conn`` usually names a sync driver (``postgresql+psycopg2://``,
``mysql+mysqldb://``, ``sqlite:///``); dagcache talks to the same database through the matching
asyncio driver: asyncpg, aiomysql or aiosqlite.
"""

from __future__ import annotations

import uuid

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from proxy.config import DatabaseConfig
from proxy.errors import ConfigError

_ASYNC_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg", "mysql": "aiomysql", "sqlite": "aiosqlite"}
_EXTRAS = {"aiomysql": "dagcache[mysql]", "aiosqlite": "dagcache[sqlite]"}


def async_url(url: str) -> URL:
    """``url`` with its driver replaced by the asyncio one for its database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("[database] url = <redacted>: not a SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise ConfigError(f"[database] url: unsupported database {backend!r}; use postgresql, mysql or sqlite")
    name = "postgresql" if backend == "postgres" else backend
    query = {k: v for k, v in parsed.query.items() if k not in ("sslmode",)} if driver == "asyncpg" else parsed.query
    return parsed.set(drivername=f"{name}+{driver}", query=query)


def _statement_name() -> str:
    return f"__dagcache_{uuid.uuid4().hex}__"


def make_engine(config: DatabaseConfig, *, pool_size: int = 1) -> AsyncEngine:
    """A small-pool async engine for ``config.url`` (``ConfigError`` if its driver is not installed)."""
    url = async_url(config.url)
    connect_args: dict[str, object] = {}
    kwargs: dict[str, object] = {}
    if url.get_backend_name() == "postgresql":
        connect_args = {"timeout": config.connect_timeout}
        if not config.prepared_statements:
            # PgBouncer in transaction mode: no statement caches, and unique statement names, since
            # consecutive statements may run on different server connections.
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
            connect_args |= {"statement_cache_size": 0, "prepared_statement_name_func": _statement_name}
        kwargs = {"pool_size": pool_size, "max_overflow": 0, "pool_pre_ping": False}
    elif url.get_backend_name() == "mysql":
        connect_args = {"connect_timeout": int(config.connect_timeout) or 1}
        kwargs = {"pool_size": pool_size, "max_overflow": 0}
    try:
        return create_async_engine(url, connect_args=connect_args, **kwargs)
    except ImportError as exc:
        driver = url.get_driver_name()
        hint = _EXTRAS.get(driver, driver)
        raise ConfigError(f"[database] url: driver {driver!r} is not installed (pip install {hint}): {exc}") from None

"""The demo's services that may already run on this machine: PostgreSQL and Redis.

Each probe answers quickly with either a usable URL or the one-line reason it is not used, so that
``dagcache demo`` can fall back to SQLite and to the embedded store and say why.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
_TIMEOUT = 3.0


@dataclass(frozen=True)
class Probe:
    """``url`` when the service answered, else ``None`` and ``reason``."""

    url: str | None
    reason: str = ""


def with_database(url: str, database: str, *, driver: str = "") -> str:
    """``url`` pointing at ``database`` (scheme ``postgresql`` or ``postgresql+<driver>``)."""
    parts = urllib.parse.urlsplit(url)
    scheme = "postgresql" + (f"+{driver}" if driver else "")
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


def display_url(url: str) -> str:
    """``url`` without its password (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ") if str(exc) else type(exc).__name__


def _admin_engine(admin_url: str) -> AsyncEngine:
    url = make_url(admin_url).set(drivername="postgresql+asyncpg")
    return create_async_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"timeout": _TIMEOUT}
    )


_ERRORS = (SQLAlchemyError, OSError, asyncio.TimeoutError, ValueError)


async def ensure_postgres_database(admin_url: str, database: str) -> Probe:
    """Connect to ``admin_url`` and create ``database`` unless it exists; the database's URL, or why not."""
    try:
        engine = _admin_engine(admin_url)
    except (ArgumentError, ValueError) as exc:
        return Probe(None, _reason(exc))
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database})
            if not found:
                await conn.execute(text(f'CREATE DATABASE "{database}"'))
    except _ERRORS as exc:
        return Probe(None, _reason(getattr(exc, "orig", None) or exc))
    finally:
        await engine.dispose()
    return Probe(with_database(admin_url, database))


async def drop_postgres_database(admin_url: str, database: str) -> str | None:
    """Drop ``database`` (ending its sessions first); ``None`` on success, else the reason."""
    try:
        engine = _admin_engine(admin_url)
    except (ArgumentError, ValueError) as exc:
        return _reason(exc)
    try:
        async with engine.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
    except _ERRORS as exc:
        return _reason(getattr(exc, "orig", None) or exc)
    finally:
        await engine.dispose()
    return None


async def probe_redis(url: str) -> Probe:
    """``url`` if a Redis there answers PING."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    try:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT)
    except ValueError as exc:
        return Probe(None, _reason(exc))
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Probe(None, _reason(exc))
    finally:
        await client.aclose()
    return Probe(url)

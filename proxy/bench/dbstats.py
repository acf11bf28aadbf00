"""Statements executed in Airflow's metadata DB, from ``pg_stat_statements`` (PostgreSQL only)."""

from __future__ import annotations

import re

import asyncpg  # type: ignore[import-untyped]

from proxy.bench import BenchError

_COUNT = (
    "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

UNAVAILABLE = (
    "pg_stat_statements is not available in that PostgreSQL (it needs shared_preload_libraries ="
    " 'pg_stat_statements' in postgresql.conf and a restart); DB columns stay empty"
)


def asyncpg_url(url: str) -> str:
    """Airflow's ``sql_alchemy_conn`` (``postgresql+psycopg2://...``) as a plain ``postgresql://`` URL."""
    match = re.match(r"^(postgres(?:ql)?)(\+\w+)?://", url)
    if match is None:
        raise BenchError("--db must be a PostgreSQL URL (postgresql://...): pg_stat_statements is PostgreSQL only")
    return "postgresql://" + url[match.end() :]


class StatementCounter:
    """``sum(calls)`` of ``pg_stat_statements`` for the current database. Its own counting query is
    subtracted, so two reads with nothing else running differ by 0."""

    def __init__(self, url: str) -> None:
        self._url = asyncpg_url(url)
        self._conn: asyncpg.Connection | None = None
        self._reads = 0

    async def open(self) -> str | None:
        """Connect and enable the extension; returns why counting is impossible, or None."""
        try:
            self._conn = await asyncpg.connect(self._url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise BenchError(f"cannot connect to --db: {type(exc).__name__}: {exc}") from None
        try:
            await self._conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except asyncpg.PostgresError:
            pass  # no privilege to create it: it may exist already; the first read tells
        try:
            await self.total()
        except asyncpg.PostgresError as exc:
            await self.close()
            return f"{UNAVAILABLE} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        return None

    async def total(self) -> int:
        if self._conn is None:
            raise BenchError("statement counter is not open")
        value = await self._conn.fetchval(_COUNT)
        self._reads += 1
        return int(value or 0) - (self._reads - 1)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

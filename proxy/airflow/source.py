"""Fingerprints of every DAG, read from Airflow's metadata DB with a few index-friendly statements.

:class:`SqlVersionSource` is the leader's only DB client. ``poll()`` runs the statements of
:func:`proxy.airflow.schema.poll_statements` in one read-only transaction (``REPEATABLE READ`` on PostgreSQL and
MySQL: one snapshot for all of them) and returns a :class:`~proxy.airflow.snapshot.Snapshot`.

**definition** (Airflow 3): the latest ``dag_version`` (highest ``version_number``): id, number, bundle name and
version, plus that version's ``serialized_dag.dag_hash`` and ``dag_code.source_code_hash``. A new version, an
in-place rewrite (same version, new ``dag_hash``), a comment-only edit (same ``dag_hash``, new source hash) and a
bundle refresh all change it. Airflow 2: ``serialized_dag.dag_hash`` plus ``dag_code.last_updated``.

**listing**: the ``dag`` row's list columns (without ``last_parsed_time`` / ``last_parse_duration`` when
``ignore_parse_time``), its tags, owner links and DAG warnings.

**state**: neither ``dag_run.updated_at`` nor ``task_instance.updated_at`` is indexed, so no statement reads every
row. Per DAG the state fingerprint digests:

a. its unfinished runs (``state = 'queued'`` / ``'running'``, one partial index each): count,
   ``sum(epoch(updated_at))`` and ``max(id)`` per state;
b. its unfinished task instances (``state IS NULL OR state IN (...)``, the ``(state)`` index): count,
   ``sum(epoch(updated_at))`` and ``sum(try_number)`` per state. A sum of epochs moves when any row's
   ``updated_at`` does, whatever the commit order (``max()`` misses a late commit of an older value);
c. a counter of its run events among the newest runs: each poll reads the ``run_id_window`` newest runs and
   every run above the previous poll's highest id (primary key), and compares them with the previous poll: a new
   id (also one committed late, below the previous highest), a changed ``state`` or ``updated_at``, and an id
   that vanished are each an event of the run's DAG;
d. its notes: each poll reads the global ``count`` / ``sum(epoch(updated_at))`` of ``dag_run_note`` and
   ``task_instance_note``, and the per-DAG aggregate (a join on primary keys) only when those moved.

Hence a DAG's state fingerprint changes within one poll when: a run of it is created, in any state (also one
that started and finished between two polls); an unfinished run or task instance of it changes in any way
(state, ``try_number``, any write that moves ``updated_at``: heartbeats, scheduling decisions), leaves the
unfinished set (finishes, is marked, is deleted) or enters it (created, cleared, re-queued); one of the newest
runs changes state or ``updated_at`` or is deleted; a note of one of its runs or task instances is written or
deleted. Not seen, and left to :mod:`proxy.versions`, which advances every state version once per
``state_max_age``: a task instance moving from one finished state to another while its run row stays as it is
(marking a finished task success/failed when no failed downstream task gets cleared, as Airflow's
``set_task_instance_state`` then does), and a finished run changing or being deleted (with its task instances)
once it is older than the newest ``run_id_window`` runs (marking an old run, ``airflow db clean``).

The event counters and note totals live in this object: after a failover the new leader's first fingerprints
differ for the DAGs that had run events, which costs each of those DAGs one extra state version.

Every SQLAlchemy, driver and timeout error is raised as :class:`VersionLookupError` ``from`` the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, event, func, inspect, select, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.airflow import auth2_db
from proxy.airflow.queries import PollStatements, poll_statements
from proxy.airflow.schema import SchemaPlan, major_of, missing_columns, tables_for, wanted_tables
from proxy.airflow.snapshot import DagFingerprint, SchemaInfo, Snapshot
from proxy.errors import NotAnAirflowDatabase, VersionLookupError

__all__ = ["NotAnAirflowDatabase", "SqlVersionSource", "VersionLookupError"]

_DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError, sqlite3.Error)
"""What reading the DB raises: SQLAlchemy wraps the drivers' errors (asyncpg, aiomysql, aiosqlite) in
``DBAPIError``; connecting also raises ``OSError`` (refused, DNS) and ``TimeoutError`` unwrapped."""

RunRow = tuple[str, str | None, object]  # dag_id, state, updated_at


@dataclass(frozen=True, slots=True)
class _Detected:
    info: SchemaInfo
    statements: PollStatements
    auth: auth2_db.AuthStatements | None = None  # Airflow 2: sessions and users (proxy.airflow.auth2_db)


_NO_FLOOR = 2**31 - 1  # the first poll reads only the newest run_id_window ids (dag_run.id is a 4-byte int)


@dataclass(frozen=True, slots=True)
class _RunWindow:
    """The newest runs as one poll saw them."""

    low: int  # the poll read every run with id > low
    top: int  # the highest id it saw (the next poll's floor)
    rows: Mapping[int, RunRow]


def _window_events(previous: _RunWindow | None, current: _RunWindow) -> Counter[str]:
    """Per DAG, how many runs appeared, changed or vanished between two reads of the window."""
    events: Counter[str] = Counter()
    if previous is None:
        return events
    for run_id, row in current.rows.items():
        before = previous.rows.get(run_id)
        if before is None:
            if run_id > previous.low:  # new, or committed late below the previous maximum
                events[row[0]] += 1
        elif before != row:
            events[row[0]] += 1
    for run_id, before in previous.rows.items():
        if run_id > current.low and run_id not in current.rows:
            events[before[0]] += 1
    return events


@dataclass(slots=True)
class _Reads:
    """The raw rows of one poll: filled inside the transaction, turned into a Snapshot after it."""

    notes_total: tuple[object, ...]
    dags: Sequence[Sequence[Any]] = ()
    attributes: Sequence[Sequence[Any]] = ()
    import_errors: Sequence[Sequence[Any]] = ()
    active_runs: Sequence[Sequence[Any]] = ()
    active_tis: Sequence[Sequence[Any]] = ()
    window: _RunWindow = field(default_factory=lambda: _RunWindow(-1, -1, {}))
    notes_by_dag: Mapping[str, list[object]] | None = None  # None: totals unchanged, not re-read
    revoked: dict[str, float] = field(default_factory=dict)


def _digest(value: object) -> str:
    """A short digest of ``repr(value)``: plain data (lists, str, int, Decimal, datetime, None) has a stable
    repr, and it is several times faster than a JSON encoding (3,000 digests per poll at 1,000 DAGs)."""
    return hashlib.blake2b(repr(value).encode(), digest_size=16).hexdigest()


class _DigestMemo:
    """Digests of the last poll, reused while a DAG's values compare equal (most DAGs, most polls):
    comparing tuples is several times cheaper than encoding them again."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[object, str]] = {}
        self._next: dict[str, tuple[object, str]] = {}

    def digest(self, key: str, value: object) -> str:
        last = self._last.get(key)
        digest = last[1] if last is not None and last[0] == value else _digest(value)
        self._next[key] = (value, digest)
        return digest

    def rotate(self) -> None:
        """Forget what this poll did not ask for (removed DAGs)."""
        self._last, self._next = self._next, {}


def _group(rows: Sequence[Sequence[Any]], key: int, part: Callable[[Sequence[Any]], object]) -> dict[str, list[object]]:
    """``part(row)`` of each row, grouped by the DAG id in column ``key`` and sorted (order-free digests)."""
    grouped: dict[str, list[object]] = {}
    for row in rows:
        grouped.setdefault(str(row[key]), []).append(part(row))
    for parts in grouped.values():
        parts.sort(key=repr)
    return grouped


# -- per-dialect session setup -------------------------------------------------------------------------------


def _transaction_options(dialect: Dialect) -> dict[str, object]:
    if dialect.name == "postgresql":
        return {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    if dialect.name == "mysql":
        return {"isolation_level": "REPEATABLE READ"}
    return {}  # SQLite (demos): pysqlite runs SELECTs without BEGIN, so statements see no common snapshot


def _timeout_statement(dialect: Dialect, seconds: float) -> str | None:
    milliseconds = max(1, round(seconds * 1000))
    if dialect.name == "postgresql":
        # SET LOCAL for both, in one statement. No parallel workers: every statement is a small index scan, and
        # starting workers costs more than it saves (2.7 instead of 7 ms for the notes join, see the benchmark).
        return (
            f"SELECT set_config('statement_timeout', '{milliseconds}', true),"
            " set_config('max_parallel_workers_per_gather', '0', true)"
        )
    if dialect.name == "mysql":
        if getattr(dialect, "is_mariadb", False):
            return f"SET SESSION max_statement_time = {milliseconds / 1000:.3f}"
        return f"SET SESSION MAX_EXECUTION_TIME = {milliseconds}"
    return None  # SQLite: a local file


# -- errors ---------------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """``<driver exception>: <first line>``: SQLAlchemy's ``DBAPIError`` wraps an adapter error that wraps the
    driver's exception (e.g. asyncpg's ``QueryCanceledError``); its own message repeats the SQL."""
    original: BaseException = getattr(exc, "orig", None) or exc
    if original is not exc and original.__cause__ is not None:
        original = original.__cause__
    lines = str(original).strip().splitlines()
    name = type(original).__name__
    return f"{name}: {lines[0]}" if lines else name


@contextlib.contextmanager
def _mapped_errors(action: str, poll_timeout: float) -> Iterator[None]:
    try:
        yield
    except VersionLookupError:
        raise
    except TimeoutError as exc:
        raise VersionLookupError(
            f"metadata DB {action} timed out (no answer within the connect timeout or poll_timeout={poll_timeout:g} s)"
        ) from exc
    except _DB_ERRORS as exc:
        raise VersionLookupError(f"metadata DB {action} failed: {_describe(exc)}") from exc


def _inspect(sync: Connection) -> tuple[set[str], dict[str, set[str]]]:
    """Table names, and the columns of the tables a poll may read (empty if the major is unknown)."""
    inspector = inspect(sync)
    names = set(inspector.get_table_names())
    major = major_of(names)
    if major is None:
        return names, {}
    wanted = [name for name in wanted_tables(tables_for(major)) if name in names]
    if major == 2:
        wanted += [table.name for table in auth2_db.TABLES if table.name in names]
    found = inspector.get_multi_columns(filter_names=wanted)
    return names, {table: {column["name"] for column in columns} for (_, table), columns in found.items()}


class SqlVersionSource:
    """Reads DAG fingerprints from Airflow's metadata DB through ``engine`` (owned by the caller).

    ``statement_timeout`` bounds each statement on the server (PostgreSQL ``statement_timeout``, transaction-local,
    MySQL ``MAX_EXECUTION_TIME``, MariaDB ``max_statement_time``; SQLite none); ``poll_timeout`` (default
    ``max(10, 4 * statement_timeout)`` s) bounds a whole poll, connecting included, on the client.
    ``ignore_parse_time`` leaves out what the DAG processor rewrites on every parse (``last_parsed_time``,
    ``last_parse_duration``, import error timestamps). ``run_id_window``: how many of the newest runs each poll
    re-reads (a run committed after more than that many newer runs were created is missed).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        statement_timeout: float = 2.0,
        ignore_parse_time: bool = True,
        run_id_window: int = 200,
        poll_timeout: float | None = None,
    ) -> None:
        if statement_timeout <= 0:
            raise ValueError("statement_timeout must be positive")
        if run_id_window < 1:
            raise ValueError("run_id_window must be at least 1")
        self._engine = engine
        self._statement_timeout = statement_timeout
        self._ignore_parse_time = ignore_parse_time
        self._run_id_window = run_id_window
        self._poll_timeout = poll_timeout if poll_timeout is not None else max(10.0, 4 * statement_timeout)
        self._lock = asyncio.Lock()
        self._detected: _Detected | None = None
        self._window: _RunWindow | None = None
        self._events: Counter[str] = Counter()
        self._notes_total: tuple[object, ...] | None = None
        self._notes_by_dag: Mapping[str, list[object]] = {}
        self._definitions, self._listings = _DigestMemo(), _DigestMemo()
        self._auth_facts = auth2_db.FactsReader()  # Airflow 2 sessions and users

    def __repr__(self) -> str:
        found = self._detected
        schema = f"Airflow {found.info.major} at {found.info.revision}" if found else "not detected"
        return f"<SqlVersionSource {self._url()} {schema}>"

    def _url(self) -> str:
        return self._engine.url.set(query={}).render_as_string(hide_password=True)

    async def detect(self) -> SchemaInfo:
        """The Airflow major version (3: ``dag_version`` exists; 2: ``serialized_dag`` without it) and alembic
        revision. Raises :class:`NotAnAirflowDatabase` if the database has neither table."""
        async with self._lock:
            with _mapped_errors("schema detection", self._poll_timeout):
                async with asyncio.timeout(self._poll_timeout), self._transaction() as (conn, _):
                    self._detected = await self._detect(conn)
                    return self._detected.info

    def statements(self) -> dict[str, Select[Any]]:
        """The statements a poll runs, by name, for the schema of the last :meth:`detect` or :meth:`poll`."""
        if self._detected is None:
            raise RuntimeError("call detect() or poll() first")
        return self._detected.statements.named()

    async def poll(self) -> Snapshot:
        """Read every fingerprint in one read-only transaction."""
        async with self._lock:
            try:
                with _mapped_errors("poll", self._poll_timeout):
                    async with asyncio.timeout(self._poll_timeout), self._transaction() as (conn, count):
                        detected, reads = await self._read(conn)
                        statements = count()
            except BaseException:
                self._detected = None  # detect again next time: the error may come from a schema change
                raise
            return self._snapshot(detected, reads, statements)

    # -- I/O ---------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[tuple[AsyncConnection, Callable[[], int]]]:
        """A connection in a read-only snapshot transaction with the statement timeout set, and a function
        returning how many statements it has executed so far."""
        async with self._engine.connect() as conn:
            statements = 0

            def count(*_: object) -> None:
                nonlocal statements
                statements += 1

            event.listen(conn.sync_connection, "before_cursor_execute", count)
            conn = await conn.execution_options(**_transaction_options(conn.dialect))
            async with conn.begin():
                limit = _timeout_statement(conn.dialect, self._statement_timeout)
                if limit is not None:
                    await conn.execute(text(limit))
                yield conn, lambda: statements

    async def _detect(self, conn: AsyncConnection) -> _Detected:
        names, columns = await conn.run_sync(_inspect)
        major = major_of(names)
        if major is None:
            raise NotAnAirflowDatabase(
                f"{self._url()} is not an Airflow metadata database: it has neither a dag_version table"
                f" (Airflow 3) nor a serialized_dag table (Airflow 2), {len(names)} tables in all. Point"
                " [database] url at Airflow's metadata database (its [database] sql_alchemy_conn), migrated by"
                " `airflow db migrate`."
            )
        tables = tables_for(major)
        missing = missing_columns(tables, columns)
        if missing:
            raise VersionLookupError(
                f"{self._url()}: unsupported Airflow {major} metadata schema, missing {', '.join(missing)}"
                " (dagcache reads the schemas of Airflow 2.11 and 3.x)"
            )
        plan = SchemaPlan(tables, {name: frozenset(cols) for name, cols in columns.items()})
        revision = ""
        if "alembic_version" in names:
            value = (await conn.execute(select(func.max(tables.alembic_version.c.version_num)))).scalar()
            revision = "" if value is None else str(value)
        statements = poll_statements(plan, ignore_parse_time=self._ignore_parse_time, run_id_window=self._run_id_window)
        auth = auth2_db.statements() if major == 2 and auth2_db.available(columns) else None
        return _Detected(SchemaInfo(major=major, revision=revision), statements, auth)

    async def _read(self, conn: AsyncConnection) -> tuple[_Detected, _Reads]:
        detected = self._detected or await self._detect(conn)
        scalars = (await conn.execute(detected.statements.scalars)).one()
        if str(scalars[0] or "") != detected.info.revision:  # Airflow was upgraded since the last detection
            detected = await self._detect(conn)
            scalars = (await conn.execute(detected.statements.scalars)).one()
        self._detected = detected
        s = detected.statements
        reads = _Reads(notes_total=tuple(scalars[1:]))
        reads.dags = (await conn.execute(s.dags)).all()
        reads.attributes = (await conn.execute(s.attributes)).all()
        reads.import_errors = (await conn.execute(s.import_errors)).all()
        reads.active_runs = (await conn.execute(s.active_runs)).all()
        reads.active_tis = (await conn.execute(s.active_task_instances)).all()
        reads.window = await self._read_window(conn, s.run_window)
        if reads.notes_total != self._notes_total:
            reads.notes_by_dag = await _read_notes(conn, s.notes_by_dag)
        if s.revoked is not None:
            reads.revoked = {str(jti): float(exp) for jti, exp in (await conn.execute(s.revoked)).all()}
        if detected.auth is not None:  # Airflow 2: logged-in sessions and the users' fingerprint, same channel
            reads.revoked = await self._auth_facts.read(conn, detected.auth)
        return detected, reads

    async def _read_window(self, conn: AsyncConnection, statement: Select[Any]) -> _RunWindow:
        floor = self._window.top if self._window is not None else _NO_FLOOR
        rows = (await conn.execute(statement, {"floor": floor})).all()
        if not rows:  # no runs at all
            return _RunWindow(-1, -1, {})
        ids = [row[0] for row in rows]
        # What was read is every run with id > low: the newest window are contiguous, and all above floor.
        low = min(sorted(ids, reverse=True)[: self._run_id_window][-1] - 1, floor)
        return _RunWindow(low, max(ids), {row[0]: (row[1], row[2], row[3]) for row in rows})

    # -- building the snapshot (no I/O) -----------------------------------------------------------------------

    def _snapshot(self, detected: _Detected, reads: _Reads, statements: int) -> Snapshot:
        dag_ids = [str(row[0]) for row in reads.dags]
        self._advance(reads, set(dag_ids))
        width = detected.statements.listing_width
        attributes = _group(reads.attributes, 1, lambda row: [row[0], row[2], row[3]])
        runs = _group(reads.active_runs, 0, lambda row: [row[1], row[2], row[3], row[4]])
        tis = _group(reads.active_tis, 0, lambda row: [row[1] or "", row[2], row[3], row[4]])
        dags = {
            dag_id: DagFingerprint(
                definition=self._definitions.digest(dag_id, tuple(row[1 + width :])),
                state=_digest(
                    (runs.get(dag_id), tis.get(dag_id), self._events[dag_id], self._notes_by_dag.get(dag_id))
                ),
                listing=self._listings.digest(dag_id, (tuple(row[1 : 1 + width]), attributes.get(dag_id))),
            )
            for dag_id, row in zip(dag_ids, reads.dags, strict=True)
        }
        self._definitions.rotate()
        self._listings.rotate()
        return Snapshot(
            schema=detected.info,
            dags=dags,
            global_extra=_digest([[list(row) for row in reads.import_errors], sorted(dag_ids)]),
            revoked=reads.revoked,
            statements=statements,
        )

    def _advance(self, reads: _Reads, dag_ids: set[str]) -> None:
        """Fold this poll's run events and notes into what the source remembers between polls."""
        events = self._events + _window_events(self._window, reads.window)
        self._events = Counter({dag_id: n for dag_id, n in events.items() if dag_id in dag_ids})
        self._window = reads.window
        if reads.notes_by_dag is not None:
            self._notes_total, self._notes_by_dag = reads.notes_total, reads.notes_by_dag


async def _read_notes(conn: AsyncConnection, statement: Select[Any] | None) -> dict[str, list[object]]:
    by_dag: dict[str, list[object]] = {}
    if statement is not None:
        for kind, dag_id, count, sum_epochs in (await conn.execute(statement)).all():
            by_dag.setdefault(str(dag_id), []).append([kind, count, sum_epochs])
    for parts in by_dag.values():
        parts.sort(key=repr)
    return by_dag

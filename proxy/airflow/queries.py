"""The statements of one poll, built from :mod:`proxy.airflow.schema`'s tables. Pure: no I/O.

Each statement is served by an index (see the README, "What one poll sees"); sums of ``updated_at`` epochs
(never ``max``) make a committed change visible whatever the commit order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    FromClause,
    Integer,
    Numeric,
    Select,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["PollStatements", "epoch", "poll_statements"]

from proxy.airflow.schema import ACTIVE_RUN_STATES, ACTIVE_TI_STATES, AirflowTables, SchemaPlan

# ---------------------------------------------------------------------------------------------------------
# epoch(): seconds since 1970 of a timestamp column, per dialect
# ---------------------------------------------------------------------------------------------------------


class epoch(FunctionElement[Decimal]):
    """``epoch(column)``: the timestamp as seconds since the epoch, exact where the database allows.

    PostgreSQL ``EXTRACT(EPOCH FROM x)`` (``numeric`` with microseconds since PostgreSQL 14), MySQL/MariaDB
    ``UNIX_TIMESTAMP(x)`` (a decimal with the column's fractional digits), SQLite a Julian-day difference (a
    float: exact enough to change when a value changes). Sums of epochs are only compared on one database.
    """

    type = Numeric()
    name = "epoch"
    inherit_cache = True


@compiles(epoch)
def _epoch_default(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch, "postgresql")
def _epoch_postgresql(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(epoch, "mysql")
def _epoch_mysql(element: epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"UNIX_TIMESTAMP({compiler.process(element.clauses, **kw)})"


# ---------------------------------------------------------------------------------------------------------
# The statements of one poll
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollStatements:
    """The statements a poll runs, built once per detected schema. Column order is part of the contract with
    :mod:`proxy.airflow.source`, which reads rows by position."""

    scalars: Select[Any]  # revision, dag_run_note count + sum of epochs, task_instance_note count + sum
    dags: Select[Any]  # dag_id, <listing_width list columns>, <definition columns>
    attributes: Select[Any]  # kind ('tag' | 'owner' | 'warning'), dag_id, a, b
    import_errors: Select[Any]
    active_runs: Select[Any]  # dag_id, state, count, sum of epochs, max(id)
    active_task_instances: Select[Any]  # dag_id, state, count, sum of epochs, sum(try_number)
    run_window: Select[Any]  # id, dag_id, state, updated_at; parameter floor
    notes_by_dag: Select[Any] | None  # kind ('run' | 'ti'), dag_id, count, sum of epochs
    revoked: Select[Any] | None  # jti, epoch(exp)
    listing_width: int

    def named(self) -> dict[str, Select[Any]]:
        """Every statement by a readable name (for EXPLAIN and the docs)."""
        named = {
            "scalars (revision, note totals)": self.scalars,
            "dags + definitions": self.dags,
            "tags, owners, warnings": self.attributes,
            "import errors": self.import_errors,
            "unfinished runs": self.active_runs,
            "unfinished task instances": self.active_task_instances,
            "newest runs (id window)": self.run_window,
            "revoked tokens": self.revoked,
            "notes per DAG (only when note totals moved)": self.notes_by_dag,
        }
        return {name: statement for name, statement in named.items() if statement is not None}


def poll_statements(plan: SchemaPlan, *, ignore_parse_time: bool, run_id_window: int) -> PollStatements:
    """The statements of a poll for the schema ``plan`` describes."""
    listing = plan.listing_columns(ignore_parse_time)
    return PollStatements(
        scalars=_scalars(plan),
        dags=_dags(plan, listing),
        attributes=_attributes(plan),
        import_errors=_import_errors(plan, ignore_parse_time),
        active_runs=_active_runs(plan.tables),
        active_task_instances=_active_task_instances(plan.tables),
        run_window=_run_window(plan.tables, run_id_window),
        notes_by_dag=_notes_by_dag(plan),
        revoked=_revoked(plan),
        listing_width=len(listing),
    )


def _definitions_3(t: AirflowTables) -> tuple[FromClause, list[ColumnElement[Any]]]:
    """The latest version of each DAG with its ``dag_hash`` and ``source_code_hash``: per DAG, one backward probe of
    the unique ``(dag_id, version_number)`` index, then primary/unique-key lookups. This stays flat in the number
    of versions per DAG (a join to ``max(version_number) GROUP BY dag_id`` reads every version: 1.5x slower at 50
    versions per DAG, 20 % faster at 3; see bench/poll_cost.py)."""
    dv, sd, dc = t.dag_version, t.serialized_dag, t.dag_code
    assert dv is not None
    newer = dv.alias("newer")
    latest = (
        select(newer.c.id)
        .where(newer.c.dag_id == t.dag.c.dag_id)
        .order_by(newer.c.version_number.desc())
        .limit(1)
        .correlate(t.dag)
        .scalar_subquery()
    )
    joined = (
        t.dag.outerjoin(dv, dv.c.id == latest)
        .outerjoin(sd, sd.c.dag_version_id == dv.c.id)
        .outerjoin(dc, dc.c.dag_version_id == dv.c.id)
    )
    return joined, [
        dv.c.id,
        dv.c.version_number,
        dv.c.bundle_name,
        dv.c.bundle_version,
        sd.c.dag_hash,
        dc.c.source_code_hash,
    ]


def _definitions_2(t: AirflowTables) -> tuple[FromClause, list[ColumnElement[Any]]]:
    sd, dc = t.serialized_dag, t.dag_code
    joined = t.dag.outerjoin(sd, sd.c.dag_id == t.dag.c.dag_id).outerjoin(dc, dc.c.fileloc_hash == sd.c.fileloc_hash)
    return joined, [sd.c.dag_hash, dc.c.last_updated]


def _dags(plan: SchemaPlan, listing: Sequence[str]) -> Select[Any]:
    t = plan.tables
    joined, definition = _definitions_3(t) if t.dag_version is not None else _definitions_2(t)
    columns = [_as_text(t.dag.c[name]) for name in listing]
    return select(t.dag.c.dag_id, *columns, *definition).select_from(joined)


def _as_text(column: Column[Any]) -> ColumnElement[Any]:
    """JSON columns as their text (no decoding by the driver; exact on PostgreSQL's ``json``)."""
    return cast(column, Text).label(column.name) if column.info.get("json") else column


def _attributes(plan: SchemaPlan) -> Select[Any]:
    t = plan.tables
    parts = [select(literal("tag"), t.dag_tag.c.dag_id, t.dag_tag.c.name, cast(null(), String))]
    if plan.has(t.dag_owner_attributes):
        doa = t.dag_owner_attributes
        parts.append(select(literal("owner"), doa.c.dag_id, doa.c.owner, doa.c.link))
    if plan.has(t.dag_warning):  # not its timestamp: rewritten when the warning is re-raised on a parse
        dw = t.dag_warning
        parts.append(select(literal("warning"), dw.c.dag_id, dw.c.warning_type, cast(dw.c.message, String)))
    return select(union_all(*parts).subquery("attributes"))


def _import_errors(plan: SchemaPlan, ignore_parse_time: bool) -> Select[Any]:
    """Import errors; ``timestamp`` is the time of the last parse that failed: left out with ``ignore_parse_time``
    (the stack trace still changes when the error does)."""
    ie = plan.tables.import_error
    have = plan.columns.get(ie.name, frozenset())
    columns = [c for c in ie.columns if c.name in have and not (ignore_parse_time and c.name == "timestamp")]
    return select(*columns).order_by(ie.c.id)


def _active_runs(t: AirflowTables) -> Select[Any]:
    """One ``GROUP BY`` per unfinished state, so that each matches its partial index exactly (``state IN (...)``
    makes PostgreSQL scan the whole ``(dag_id, state)`` index instead)."""
    dr = t.dag_run
    parts = [
        select(dr.c.dag_id, dr.c.state, func.count(), func.sum(epoch(dr.c.updated_at)), func.max(dr.c.id))
        .where(dr.c.state == state)
        .group_by(dr.c.dag_id, dr.c.state)
        for state in ACTIVE_RUN_STATES
    ]
    return select(union_all(*parts).subquery("runs"))


def _active_task_instances(t: AirflowTables) -> Select[Any]:
    ti = t.task_instance
    return (
        select(ti.c.dag_id, ti.c.state, func.count(), func.sum(epoch(ti.c.updated_at)), func.sum(ti.c.try_number))
        .where(or_(ti.c.state.is_(None), ti.c.state.in_(ACTIVE_TI_STATES)))
        .group_by(ti.c.dag_id, ti.c.state)
    )


def _run_window(t: AirflowTables, window: int) -> Select[Any]:
    """The ``window`` newest runs (a backward primary-key scan with a limit) and every run with ``id > :floor``
    (the previous poll's highest id; a forward primary-key range scan, usually empty), so that a burst of more
    than ``window`` runs between two polls, or during a DB outage, is read whole."""
    dr = t.dag_run
    columns = (dr.c.id, dr.c.dag_id, dr.c.state, dr.c.updated_at)
    newest = select(*columns).order_by(dr.c.id.desc()).limit(window).subquery("newest")
    above = select(*columns).where(dr.c.id > bindparam("floor", type_=Integer)).subquery("above")
    return select(union_all(select(newest), select(above)).subquery("runs"))


def _note_totals(table: Table) -> list[ColumnElement[Any]]:
    return [
        select(func.count()).select_from(table).scalar_subquery(),
        select(func.sum(epoch(table.c.updated_at))).scalar_subquery(),
    ]


def _scalars(plan: SchemaPlan) -> Select[Any]:
    t = plan.tables
    columns: list[ColumnElement[Any]] = [select(func.max(t.alembic_version.c.version_num)).scalar_subquery()]
    for table in (t.dag_run_note, t.task_instance_note):
        columns += _note_totals(table) if plan.has(table) else [null(), null()]
    return select(*columns)


def _notes_by_dag(plan: SchemaPlan) -> Select[Any] | None:
    t = plan.tables
    parts: list[Select[Any]] = []
    if plan.has(t.dag_run_note):
        drn, dr = t.dag_run_note, t.dag_run
        parts.append(
            select(literal("run"), dr.c.dag_id, func.count(), func.sum(epoch(drn.c.updated_at)))
            .select_from(drn.join(dr, dr.c.id == drn.c.dag_run_id))
            .group_by(dr.c.dag_id)
        )
    if plan.has(t.task_instance_note):
        tin, ti = t.task_instance_note, t.task_instance
        if "ti_id" in tin.c:  # Airflow 3: keyed by the task instance's uuid
            owner: ColumnElement[Any] = ti.c.dag_id
            source: FromClause = tin.join(ti, ti.c.id == tin.c.ti_id)
        else:  # Airflow 2: the note carries dag_id itself
            owner, source = tin.c.dag_id, tin
        parts.append(
            select(literal("ti"), owner, func.count(), func.sum(epoch(tin.c.updated_at)))
            .select_from(source)
            .group_by(owner)
        )
    return select(union_all(*parts).subquery("notes")) if parts else None


def _revoked(plan: SchemaPlan) -> Select[Any] | None:
    rt = plan.tables.revoked_token
    if rt is None or not plan.has(rt):
        return None
    return select(rt.c.jti, epoch(rt.c.exp)).where(rt.c.exp > func.current_timestamp())

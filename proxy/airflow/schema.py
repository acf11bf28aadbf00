"""What dagcache reads from Airflow's metadata DB: Core tables of the few columns it needs (statements: queries.py).

No ``import airflow``: the tables mirror what ``airflow db migrate`` creates (checked against Airflow 3.3.2,
revision ``d2f4e1b3c5a7``, and Airflow 2.11.2, ``5f2621c13b39``, on PostgreSQL) and declare only the columns
:mod:`proxy.airflow.source` uses. Tables whose used columns are the same in both major versions live in
:data:`COMMON`, the others in :data:`AIRFLOW3` / :data:`AIRFLOW2`. UUIDs and JSON documents are declared as
strings: they are hashed, never interpreted.

``dag`` and ``import_error`` differ between minor releases (3.3 added the partition columns, 3.0 replaced
``is_active`` by ``is_stale``, ...): their columns are candidates, and a poll selects those the connected
database has (:class:`SchemaPlan`). Every other table must have every declared column.

:func:`proxy.airflow.queries.poll_statements` builds, once per detected schema, the statements of a poll:
portable SQL (a correlated ``ORDER BY ... LIMIT 1`` instead of ``DISTINCT ON``, ``UNION ALL`` instead of
``FILTER``; ``epoch`` is the only per-dialect construct), each answered from an index on PostgreSQL
(``bench/poll_cost.py`` prints the plans).
Checked on PostgreSQL 15, SQLite and MariaDB 10.11. No I/O in this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "ACTIVE_RUN_STATES",
    "ACTIVE_TI_STATES",
    "AIRFLOW2",
    "AIRFLOW2_TABLES",
    "AIRFLOW3",
    "AIRFLOW3_TABLES",
    "COMMON",
    "PARSE_TIME_COLUMNS",
    "REQUIRED_TABLES",
    "AirflowTables",
    "SchemaPlan",
    "major_of",
    "missing_columns",
    "tables_for",
    "wanted_tables",
]

COMMON = MetaData()
"""Tables (or the column subsets used) identical in Airflow 2.11 and 3.x."""
AIRFLOW3 = MetaData()
"""Airflow 3.x only, or different from Airflow 2."""
AIRFLOW2 = MetaData()
"""Airflow 2.x only, or different from Airflow 3."""

ACTIVE_RUN_STATES: tuple[str, ...] = ("queued", "running")
"""``DagRunState`` values of a run that is not finished (``State.unfinished_dr_states``); each has a partial
index on ``dag_run``."""

ACTIVE_TI_STATES: tuple[str, ...] = (
    "scheduled",
    "queued",
    "running",
    "restarting",
    "up_for_retry",
    "up_for_reschedule",
    "deferred",
    "awaiting_input",  # Airflow 3.1+ (human in the loop)
    "shutdown",  # Airflow 2 only, deprecated
)
"""``State.unfinished`` of Airflow 3.3 and 2.11 minus ``None`` (queried as ``IS NULL``): every state from which a
task instance still moves on its own. The terminal ones are success, failed, skipped, upstream_failed, removed.
A whitelist, not ``NOT IN (terminal)``, so that the ``(state)`` index serves the query."""

_JSON = {"json": True}  # a JSON document: selected as text (hashed, never parsed)

PARSE_TIME_COLUMNS: frozenset[str] = frozenset({"last_parsed_time", "last_parse_duration"})
"""``dag`` columns the DAG processor rewrites on every parse (every ~30 s per file with a running processor)."""

alembic_version = Table("alembic_version", COMMON, Column("version_num", String(32), primary_key=True))

dag_run = Table(
    "dag_run",
    COMMON,
    Column("id", Integer, primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("state", String(50)),
    Column("updated_at", DateTime(timezone=True)),
)


def _task_instance_columns() -> tuple[Column[object], ...]:
    return (
        Column("dag_id", String(250), nullable=False),
        Column("state", String(20)),
        Column("try_number", Integer),
        Column("updated_at", DateTime(timezone=True)),
    )


dag_tag = Table(
    "dag_tag",
    COMMON,
    Column("name", String(100), primary_key=True),
    Column("dag_id", String(250), primary_key=True),
)

dag_owner_attributes = Table(
    "dag_owner_attributes",
    COMMON,
    Column("dag_id", String(250), primary_key=True),
    Column("owner", String(500), primary_key=True),
    Column("link", String(500), nullable=False),
)

dag_warning = Table(
    "dag_warning",
    COMMON,
    Column("dag_id", String(250), primary_key=True),
    Column("warning_type", String(50), primary_key=True),
    Column("message", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
)

dag_run_note = Table(
    "dag_run_note",
    COMMON,
    Column("dag_run_id", Integer, primary_key=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# -- Airflow 3 ---------------------------------------------------------------------------------------------

_DAG_LISTING_3: tuple[Column[object], ...] = (
    Column("is_paused", Boolean),
    Column("is_stale", Boolean),
    Column("exceeds_max_non_backfill", Boolean),
    Column("last_parsed_time", DateTime(timezone=True)),
    Column("last_parse_duration", Float),
    Column("last_expired", DateTime(timezone=True)),
    Column("fileloc", String(2000)),
    Column("relative_fileloc", String(2000)),
    Column("bundle_name", String(250)),
    Column("bundle_version", String(200)),
    Column("owners", String(2000)),
    Column("dag_display_name", String(2000)),
    Column("description", Text),
    Column("timetable_type", String(255)),
    Column("timetable_summary", Text),
    Column("timetable_description", String(1000)),
    Column("timetable_partitioned", Boolean),
    Column("timetable_periodic", Boolean),
    Column("partition_mapper_info", Text, info=_JSON),
    Column("asset_expression", Text, info=_JSON),
    Column("deadline", Text, info=_JSON),
    Column("max_active_tasks", Integer),
    Column("max_active_runs", Integer),
    Column("max_consecutive_failed_dag_runs", Integer),
    Column("has_task_concurrency_limits", Boolean),
    Column("has_import_errors", Boolean),
    Column("fail_fast", Boolean),
    Column("allowed_run_types", Text, info=_JSON),
    Column("next_dagrun", DateTime(timezone=True)),
    Column("next_dagrun_data_interval_start", DateTime(timezone=True)),
    Column("next_dagrun_data_interval_end", DateTime(timezone=True)),
    Column("next_dagrun_partition_key", String(255)),
    Column("next_dagrun_partition_date", DateTime(timezone=True)),
    Column("next_dagrun_create_after", DateTime(timezone=True)),
)

dag3 = Table("dag", AIRFLOW3, Column("dag_id", String(250), primary_key=True), *_DAG_LISTING_3)

dag_version = Table(
    "dag_version",
    AIRFLOW3,
    Column("id", String(36), primary_key=True),  # uuid
    Column("version_number", Integer, nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("bundle_name", String(250)),
    Column("bundle_version", String(250)),
)

serialized_dag3 = Table(
    "serialized_dag",
    AIRFLOW3,
    Column("id", String(36), primary_key=True),  # uuid
    Column("dag_hash", String(32), nullable=False),
    Column("dag_version_id", String(36), nullable=False),  # uuid, unique
)

dag_code3 = Table(
    "dag_code",
    AIRFLOW3,
    Column("id", String(36), primary_key=True),  # uuid
    Column("source_code_hash", String(32), nullable=False),
    Column("dag_version_id", String(36), nullable=False),  # uuid, unique
)

task_instance3 = Table(
    "task_instance",
    AIRFLOW3,
    Column("id", String(36), primary_key=True),  # uuid
    *_task_instance_columns(),
)

task_instance_note3 = Table(
    "task_instance_note",
    AIRFLOW3,
    Column("ti_id", String(36), primary_key=True),  # uuid -> task_instance.id
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

import_error3 = Table(
    "import_error",
    AIRFLOW3,
    Column("id", Integer, primary_key=True),
    Column("timestamp", DateTime(timezone=True)),
    Column("filename", String(1024)),
    Column("bundle_name", String(250)),
    Column("stacktrace", Text),
)

revoked_token = Table(
    "revoked_token",
    AIRFLOW3,
    Column("jti", String(32), primary_key=True),
    Column("exp", DateTime(timezone=True), nullable=False),
)

# -- Airflow 2 ---------------------------------------------------------------------------------------------

_DAG_LISTING_2: tuple[Column[object], ...] = (
    Column("root_dag_id", String(250)),
    Column("is_paused", Boolean),
    Column("is_subdag", Boolean),
    Column("is_active", Boolean),
    Column("last_parsed_time", DateTime(timezone=True)),
    Column("last_pickled", DateTime(timezone=True)),
    Column("last_expired", DateTime(timezone=True)),
    Column("scheduler_lock", Boolean),
    Column("pickle_id", Integer),
    Column("fileloc", String(2000)),
    Column("processor_subdir", String(2000)),
    Column("owners", String(2000)),
    Column("dag_display_name", String(2000)),
    Column("description", Text),
    Column("default_view", String(25)),
    Column("schedule_interval", Text),
    Column("timetable_description", String(1000)),
    Column("dataset_expression", Text, info=_JSON),
    Column("max_active_tasks", Integer),
    Column("max_active_runs", Integer),
    Column("max_consecutive_failed_dag_runs", Integer),
    Column("has_task_concurrency_limits", Boolean),
    Column("has_import_errors", Boolean),
    Column("next_dagrun", DateTime(timezone=True)),
    Column("next_dagrun_data_interval_start", DateTime(timezone=True)),
    Column("next_dagrun_data_interval_end", DateTime(timezone=True)),
    Column("next_dagrun_create_after", DateTime(timezone=True)),
)

dag2 = Table("dag", AIRFLOW2, Column("dag_id", String(250), primary_key=True), *_DAG_LISTING_2)

serialized_dag2 = Table(
    "serialized_dag",
    AIRFLOW2,
    Column("dag_id", String(250), primary_key=True),
    Column("fileloc_hash", BigInteger, nullable=False),
    Column("dag_hash", String(32), nullable=False),
)

dag_code2 = Table(
    "dag_code",
    AIRFLOW2,
    Column("fileloc_hash", BigInteger, primary_key=True),
    Column("last_updated", DateTime(timezone=True), nullable=False),
)

task_instance2 = Table("task_instance", AIRFLOW2, *_task_instance_columns())

task_instance_note2 = Table(
    "task_instance_note",
    AIRFLOW2,
    Column("dag_id", String(250), primary_key=True),
    Column("task_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("map_index", Integer, primary_key=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

import_error2 = Table(
    "import_error",
    AIRFLOW2,
    Column("id", Integer, primary_key=True),
    Column("timestamp", DateTime(timezone=True)),
    Column("filename", String(1024)),
    Column("processor_subdir", String(2000)),
    Column("stacktrace", Text),
)


@dataclass(frozen=True, slots=True)
class AirflowTables:
    """The tables of one Airflow major version, as :mod:`proxy.airflow.source` uses them."""

    major: int
    dag: Table
    serialized_dag: Table
    dag_code: Table
    task_instance: Table
    task_instance_note: Table
    import_error: Table
    dag_version: Table | None  # Airflow 3 only
    revoked_token: Table | None  # Airflow 3 only
    dag_run: Table = dag_run
    dag_run_note: Table = dag_run_note
    dag_tag: Table = dag_tag
    dag_owner_attributes: Table = dag_owner_attributes
    dag_warning: Table = dag_warning
    alembic_version: Table = alembic_version

    @property
    def listing_columns(self) -> tuple[str, ...]:
        """Candidate ``dag`` columns that make up a DAG's row in the DAG list (all but ``dag_id``)."""
        return tuple(name for name in self.dag.columns.keys() if name != "dag_id")

    @property
    def optional_tables(self) -> tuple[Table, ...]:
        """Tables read only if the database has them (older releases, or trimmed schemas)."""
        tables = [self.dag_owner_attributes, self.dag_warning, self.dag_run_note, self.task_instance_note]
        if self.revoked_token is not None:
            tables.append(self.revoked_token)
        return tuple(tables)


AIRFLOW3_TABLES = AirflowTables(
    major=3,
    dag=dag3,
    serialized_dag=serialized_dag3,
    dag_code=dag_code3,
    task_instance=task_instance3,
    task_instance_note=task_instance_note3,
    import_error=import_error3,
    dag_version=dag_version,
    revoked_token=revoked_token,
)

AIRFLOW2_TABLES = AirflowTables(
    major=2,
    dag=dag2,
    serialized_dag=serialized_dag2,
    dag_code=dag_code2,
    task_instance=task_instance2,
    task_instance_note=task_instance_note2,
    import_error=import_error2,
    dag_version=None,
    revoked_token=None,
)


def tables_for(major: int) -> AirflowTables:
    """The table set of Airflow ``major`` (2 or 3)."""
    if major == 3:
        return AIRFLOW3_TABLES
    if major == 2:
        return AIRFLOW2_TABLES
    raise ValueError(f"unsupported Airflow major version {major!r}; expected 2 or 3")


# ---------------------------------------------------------------------------------------------------------
# Which tables and columns the connected database has
# ---------------------------------------------------------------------------------------------------------

REQUIRED_TABLES: tuple[str, ...] = (
    "dag",
    "dag_run",
    "task_instance",
    "serialized_dag",
    "dag_code",
    "dag_tag",
    "import_error",
)
_FLEXIBLE_KEYS = {"dag": "dag_id", "import_error": "id"}  # columns differ between minor releases: use what exists


def major_of(table_names: set[str]) -> int | None:
    """3 if ``dag_version`` exists, 2 if ``serialized_dag`` does (without it), else None (not Airflow)."""
    if "dag_version" in table_names:
        return 3
    if "serialized_dag" in table_names:
        return 2
    return None


def wanted_tables(tables: AirflowTables) -> list[str]:
    """Every table name a poll may read (required and optional)."""
    names = [*REQUIRED_TABLES, *(t.name for t in tables.optional_tables)]
    if tables.dag_version is not None:
        names.append(tables.dag_version.name)
    return names


def missing_columns(tables: AirflowTables, columns: Mapping[str, set[str]]) -> list[str]:
    """``table`` or ``table.column`` for everything a poll needs that ``columns`` (name -> its columns, for the
    tables that exist) lacks. Optional tables may be absent; ``dag`` and ``import_error`` need only their key."""
    required: list[Table] = [getattr(tables, name) for name in REQUIRED_TABLES]
    if tables.dag_version is not None:
        required.append(tables.dag_version)
    present_optional = [t for t in tables.optional_tables if t.name in columns]
    missing: list[str] = []
    for table in [*required, *present_optional]:
        have = columns.get(table.name)
        if have is None:
            missing.append(table.name)
            continue
        key = _FLEXIBLE_KEYS.get(table.name)
        needed = {key} if key is not None else set(table.columns.keys())
        missing += [f"{table.name}.{name}" for name in sorted(needed - have)]
    return missing


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    """What detection found: the table set of the major version and what the database really has."""

    tables: AirflowTables
    columns: Mapping[str, frozenset[str]]  # table name -> its columns, for the tables that exist

    def has(self, table: Table | None) -> bool:
        return table is not None and table.name in self.columns

    def listing_columns(self, ignore_parse_time: bool) -> tuple[str, ...]:
        """The ``dag`` list columns the database has, in declaration order."""
        have = self.columns.get("dag", frozenset())
        skip = PARSE_TIME_COLUMNS if ignore_parse_time else frozenset()
        return tuple(c for c in self.tables.listing_columns if c in have and c not in skip)

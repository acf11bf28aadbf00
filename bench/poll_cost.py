"""What one version poll costs on a large Airflow 3 metadata DB, next to the naive per-DAG query.

Creates a fresh PostgreSQL database, gives it the real Airflow 3 schema (``airflow db migrate`` in the Airflow
venv that the integration tests use), bulk-inserts DAGs and runs with ``INSERT ... SELECT generate_series``
(default: 1,000 DAGs with 3 versions each, 50 runs per DAG, 20 task instances per run = 1,000,000 task
instances; mostly finished, the newest run of some DAGs running or queued, as on a live system), runs
``VACUUM ANALYZE``, then:

* times ``SqlVersionSource.poll()`` (median and p95 of ``--polls``, first poll separately) and counts its
  statements;
* prints ``EXPLAIN (ANALYZE, BUFFERS)`` of every statement a poll runs;
* in the same run, times and explains the naive ``SELECT dag_id, count(*), max(updated_at) FROM
  task_instance GROUP BY dag_id`` (and two ``dag_run`` alternatives) for the ratio.

The database is dropped at the end (``--keep`` keeps it).

    python -m bench.poll_cost [--db-url postgresql://postgres@127.0.0.1:5432/postgres] [--dags 1000]
        [--runs-per-dag 50] [--tasks-per-run 20] [--polls 30] [--airflow-venv DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.airflow.source import SqlVersionSource
from proxy.config import DatabaseConfig
from proxy.database import make_engine

AIRFLOW_VERSION = "3.3.2"
NAIVE = "SELECT dag_id, count(*), max(updated_at) FROM task_instance GROUP BY dag_id"
REFERENCES = {
    "naive: task_instance per DAG (count, max(updated_at))": NAIVE,
    "reference: dag_run per DAG (count, max(updated_at))": (
        "SELECT dag_id, count(*), max(updated_at) FROM dag_run GROUP BY dag_id"
    ),
    "reference: dag_run count per (dag_id, state), index only": (
        "SELECT dag_id, state, count(*) FROM dag_run GROUP BY dag_id, state"
    ),
}


def default_venv() -> Path:
    root = os.environ.get("DAGCACHE_AIRFLOW_VENVS") or str(Path.home() / ".cache" / "dagcache" / "airflow-venvs")
    return Path(root).expanduser() / f"airflow-{AIRFLOW_VERSION}"


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


# ---------------------------------------------------------------------------------------------------------
# Schema and data
# ---------------------------------------------------------------------------------------------------------


def migrate(venv: Path, db_url: str) -> float:
    """``airflow db migrate`` into ``db_url``; returns the seconds it took."""
    airflow = venv / "bin" / "airflow"
    if not airflow.exists():
        raise SystemExit(
            f"{airflow} not found: install Airflow {AIRFLOW_VERSION} there (the integration tests do it,"
            f" see tests/airflow/harness.py) or pass --airflow-venv"
        )
    sync_url = make_url(db_url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dagcache-bench-airflow-") as home:
        env |= {
            "AIRFLOW_HOME": home,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync_url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        result = subprocess.run(
            [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=False, timeout=600
        )
    if result.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


DATA_SQL = """
INSERT INTO dag_bundle (name, active) VALUES ('dags-folder', true);

INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type, timetable_summary, partition_mapper_info,
                 max_active_tasks, max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits,
                 owners, fileloc, relative_fileloc, description, last_parsed_time, last_parse_duration,
                 next_dagrun, next_dagrun_data_interval_start, next_dagrun_data_interval_end,
                 next_dagrun_create_after)
SELECT format('bench_%s', lpad(g::text, 4, '0')), g % 10 = 0, false, 'dags-folder',
       'airflow.timetables.interval.CronDataIntervalTimetable', '0 * * * *', '{}'::json,
       16, 16, 0, false, 'team_' || (g % 7), '/dags/bench_' || g || '.py', 'bench_' || g || '.py',
       'benchmark DAG ' || g, now(), 0.5,
       now() + interval '1 hour', now(), now() + interval '1 hour', now() + interval '2 hours'
FROM generate_series(0, :dags - 1) g;

INSERT INTO dag_tag (name, dag_id)
SELECT t, dag_id FROM dag, unnest(ARRAY['bench', 'team_' || (length(dag_id) + ascii(right(dag_id, 1))) % 5]) t;

INSERT INTO dag_version (id, version_number, dag_id, bundle_name, created_at, last_updated)
SELECT gen_random_uuid(), v, dag_id, 'dags-folder', now() - (:versions - v) * interval '1 day',
       now() - (:versions - v) * interval '1 day'
FROM dag, generate_series(1, :versions) v;

INSERT INTO serialized_dag (id, dag_id, data, created_at, last_updated, dag_hash, dag_version_id)
SELECT gen_random_uuid(), dag_id, '{"__version": 3, "dag": {"tasks": []}}'::jsonb, created_at, last_updated,
       md5(id::text), id
FROM dag_version;

INSERT INTO dag_code (id, dag_id, fileloc, created_at, last_updated, source_code, source_code_hash, dag_version_id)
SELECT gen_random_uuid(), dag_id, '/dags/' || dag_id || '.py', created_at, last_updated,
       '# DAG ' || dag_id || ' version ' || version_number, md5(dag_id || version_number), id
FROM dag_version;

-- Runs in creation order (ids grow with time, as the scheduler creates them): the newest run of every
-- 20th DAG is running, of every 50th queued; every 17th run failed; the rest succeeded.
INSERT INTO dag_run (dag_id, run_id, run_type, triggered_by, state, logical_date, run_after, queued_at, start_date,
                     end_date, data_interval_start, data_interval_end, created_at, updated_at,
                     created_dag_version_id, clear_number)
SELECT d.dag_id, 'scheduled__' || to_char(t.ts, 'YYYY-MM-DD"T"HH24:MI:SSOF'), 'scheduled', 'timetable',
       CASE WHEN r = :runs AND d.n % 20 = 0 THEN 'running'
            WHEN r = :runs AND d.n % 50 = 1 THEN 'queued'
            WHEN r % 17 = 0 THEN 'failed'
            ELSE 'success' END,
       t.ts, t.ts, t.ts, t.ts + interval '5 seconds',
       CASE WHEN r = :runs AND (d.n % 20 = 0 OR d.n % 50 = 1) THEN NULL ELSE t.ts + interval '10 minutes' END,
       t.ts - interval '1 hour', t.ts, t.ts, t.ts + interval '10 minutes', v.id, 0
FROM (SELECT dag_id, row_number() OVER (ORDER BY dag_id) - 1 AS n FROM dag) d
CROSS JOIN generate_series(1, :runs) r
CROSS JOIN LATERAL (SELECT now() - (:runs - r + 1) * interval '1 hour' + d.n * interval '1 second') t(ts)
JOIN dag_version v ON v.dag_id = d.dag_id AND v.version_number = :versions
ORDER BY r, d.dag_id;

-- Task instances: finished runs all finished (every 7th task skipped; a failed run's last task failed, the
-- two before it upstream_failed); a running run half done (one running, one queued, one scheduled, the rest
-- without state); a queued run without state.
INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, state, try_number, max_tries, pool, pool_slots,
                           queue, priority_weight, operator, start_date, end_date, duration, queued_dttm,
                           hostname, unixname, updated_at, dag_version_id)
SELECT gen_random_uuid(), 'task_' || lpad(k::text, 3, '0'), r.dag_id, r.run_id, -1,
       CASE WHEN r.state = 'queued' THEN NULL
            WHEN r.state = 'running' THEN
                CASE WHEN k < :tasks / 2 THEN 'success' WHEN k = :tasks / 2 THEN 'running'
                     WHEN k = :tasks / 2 + 1 THEN 'queued' WHEN k = :tasks / 2 + 2 THEN 'scheduled' END
            WHEN r.state = 'failed' AND k = :tasks THEN 'failed'
            WHEN r.state = 'failed' AND k >= :tasks - 2 THEN 'upstream_failed'
            WHEN k % 7 = 0 THEN 'skipped'
            ELSE 'success' END,
       CASE WHEN r.state = 'queued' THEN 0 ELSE 1 END, 0, 'default_pool', 1, 'default', 1, 'BashOperator',
       r.start_date + k * interval '1 second', r.end_date, 20.0, r.start_date,
       'worker-1', 'airflow', coalesce(r.end_date, r.start_date) + k * interval '1 millisecond',
       r.created_dag_version_id
FROM dag_run r CROSS JOIN generate_series(1, :tasks) k;

INSERT INTO dag_run_note (dag_run_id, content, created_at, updated_at)
SELECT id, 'note ' || id, now(), now() FROM dag_run WHERE id % 250 = 0;

INSERT INTO task_instance_note (ti_id, content, created_at, updated_at)
SELECT id, 'note', now(), now() FROM task_instance WHERE task_id = 'task_001' AND run_id LIKE '%T00:%' LIMIT 200;

INSERT INTO import_error (timestamp, filename, bundle_name, stacktrace)
SELECT now(), '/dags/broken_' || g || '.py', 'dags-folder', 'Traceback: SyntaxError ' || g
FROM generate_series(1, 3) g;

INSERT INTO revoked_token (jti, exp)
SELECT md5(g::text), now() + (g % 2 * 2 - 1) * interval '1 hour' FROM generate_series(1, 1000) g;
"""


async def load_data(engine: AsyncEngine, dags: int, versions: int, runs: int, tasks: int) -> dict[str, int]:
    params = {"dags": dags, "versions": versions, "runs": runs, "tasks": tasks}
    async with engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        for statement in _split(DATA_SQL):
            await conn.execute(text(statement), _used(statement, params))
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")
        counts = {}
        for table in ("dag", "dag_version", "dag_run", "task_instance"):
            counts[table] = int((await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one())
        unfinished = "SELECT count(*) FROM task_instance WHERE state IS NULL OR state NOT IN"
        unfinished += " ('success', 'failed', 'skipped', 'upstream_failed', 'removed')"
        counts["unfinished task_instance"] = int((await conn.exec_driver_sql(unfinished)).scalar_one())
        active = "SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')"
        counts["unfinished dag_run"] = int((await conn.exec_driver_sql(active)).scalar_one())
    return counts


def _split(script: str) -> list[str]:
    without_comments = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in without_comments.split(";") if part.strip()]


def _used(statement: str, params: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in params.items() if re.search(rf":{name}\b", statement)}


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------


async def time_polls(source: SqlVersionSource, polls: int) -> tuple[float, list[float], int, int]:
    started = time.perf_counter()
    first = await source.poll()
    first_ms = (time.perf_counter() - started) * 1000
    timings: list[float] = []
    statements = 0
    for _ in range(polls):
        started = time.perf_counter()
        snapshot = await source.poll()
        timings.append((time.perf_counter() - started) * 1000)
        statements = snapshot.statements
    return first_ms, timings, first.statements, statements


async def time_query(engine: AsyncEngine, sql: str, repeat: int) -> list[float]:
    timings = []
    async with engine.connect() as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            (await conn.exec_driver_sql(sql)).all()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


async def explain(conn: AsyncConnection, sql: str, options: str = "ANALYZE, BUFFERS") -> tuple[float, str]:
    rows = (await conn.exec_driver_sql(f"EXPLAIN ({options}) {sql}")).all()
    plan = "\n".join(str(row[0]) for row in rows)
    match = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return (float(match.group(1)) if match else float("nan")), plan


async def execution_ms(conn: AsyncConnection, sql: str, repeat: int = 5) -> float:
    """Median server execution time without per-node timing (which inflates plans with many loops)."""
    times = [(await explain(conn, sql, "ANALYZE, TIMING OFF, SUMMARY ON"))[0] for _ in range(repeat)]
    return statistics.median(times)


def compiled(source: SqlVersionSource, engine: AsyncEngine, top_run_id: int) -> dict[str, str]:
    """The poll's statements as plain SQL; the run window's ``floor`` is the previous poll's highest run id, which
    in a steady state is the current one."""
    return {
        name: str(
            statement.params(floor=top_run_id).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        )
        for name, statement in source.statements().items()
    }


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


async def measure(db_url: str, polls: int, prepared: bool) -> None:
    engine = make_engine(DatabaseConfig(url=db_url, prepared_statements=prepared))
    try:
        source = SqlVersionSource(engine)
        await source.detect()
        first_ms, timings, first_statements, statements = await time_polls(source, polls)
        mode = "asyncpg prepared statements on" if prepared else "PgBouncer-safe (no statement cache)"
        print(f"\n## poll() wall time, {mode}: {polls} polls")
        print(f"first poll (cold, notes per DAG read): {first_ms:.1f} ms, {first_statements} statements")
        print(
            f"steady state: median {statistics.median(timings):.2f} ms, p95 {p95(timings):.2f} ms,"
            f" min {min(timings):.2f} ms; {statements} statements per poll"
            " (+ BEGIN/COMMIT issued by the driver)"
        )
        if prepared:
            return
        top_run_id = int(await _scalar(engine, "SELECT max(id) FROM dag_run"))
        statements_sql = compiled(source, engine, top_run_id)
        naive_wall = await time_query(engine, NAIVE, max(3, polls // 5))
        print(f"naive query wall time: median {statistics.median(naive_wall):.1f} ms")
        await print_explains(engine, statements_sql, statistics.median(timings))
    finally:
        await engine.dispose()


async def print_explains(engine: AsyncEngine, statements: dict[str, str], poll_ms: float) -> None:
    summary: list[tuple[str, float]] = []
    plans: list[tuple[str, str, str]] = []
    async with engine.connect() as conn:
        for name, sql in {**statements, **REFERENCES}.items():
            # As in a poll's transaction (the naive query keeps its parallel workers: its best case).
            workers = "0" if name in statements else "DEFAULT"
            await conn.exec_driver_sql(f"SET max_parallel_workers_per_gather = {workers}")
            await explain(conn, sql)  # warm the cache, as the steady-state poll has it
            _, plan = await explain(conn, sql)
            summary.append((name, await execution_ms(conn, sql)))
            plans.append((name, sql, plan))
    for name, sql, plan in plans:
        print(f"\n### {name}\n{sql}\n{plan}")
    every_poll = {name: ms for name, ms in summary if name in statements and "only when" not in name}
    poll_total = sum(every_poll.values())
    naive = dict(summary)[next(iter(REFERENCES))]
    print("\n## Server execution times (EXPLAIN ANALYZE with TIMING OFF, median of 5)")
    print(f"| {'statement':<58} | {'ms':>9} |")
    print(f"|{'-' * 60}|{'-' * 11}|")
    for name, ms in summary:
        print(f"| {name:<58} | {ms:>9.3f} |")
    print(f"| {'every poll: the statements above that always run':<58} | {poll_total:>9.3f} |")
    print(
        f"\nnaive query / steady-state poll, server time: {naive / poll_total:.0f}x;"
        f" naive server time / poll wall time: {naive / poll_ms:.1f}x"
    )


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------


async def admin(admin_url: str, sql: str) -> None:
    engine = make_engine(DatabaseConfig(url=admin_url))
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql(sql)
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> None:
    db_name = f"dagcache_bench_{secrets.token_hex(4)}"
    db_url = with_database(args.db_url, db_name)
    await admin(args.db_url, f'CREATE DATABASE "{db_name}"')
    try:
        print(f"# poll cost: database {db_name}")
        seconds = migrate(args.airflow_venv, db_url)
        print(f"airflow db migrate ({AIRFLOW_VERSION}): {seconds:.1f} s")
        engine = make_engine(DatabaseConfig(url=db_url), pool_size=1)
        try:
            started = time.perf_counter()
            counts = await load_data(engine, args.dags, args.versions, args.runs_per_dag, args.tasks_per_run)
            print(f"data loaded and VACUUM ANALYZEd in {time.perf_counter() - started:.1f} s: {counts}")
            version = (await _scalar(engine, "SHOW server_version")).split()[0]
            print(f"PostgreSQL {version}, {os.cpu_count()} CPUs")
        finally:
            await engine.dispose()
        await measure(db_url, args.polls, prepared=False)
        await measure(db_url, args.polls, prepared=True)
    finally:
        if args.keep:
            print(f"\nkept database {db_name}")
        else:
            terminate = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'"
            await admin(args.db_url, terminate)
            await admin(args.db_url, f'DROP DATABASE IF EXISTS "{db_name}"')


async def _scalar(engine: AsyncEngine, sql: str) -> str:
    async with engine.connect() as conn:
        return str((await conn.exec_driver_sql(sql)).scalar_one())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--dags", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=3, help="dag_version rows per DAG")
    parser.add_argument("--runs-per-dag", type=int, default=50)
    parser.add_argument("--tasks-per-run", type=int, default=20)
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--airflow-venv", type=Path, default=default_venv())
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args(argv)
    if args.tasks_per_run < 4:
        parser.error("--tasks-per-run must be at least 4")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

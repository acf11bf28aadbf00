"""SqlVersionSource against the real Airflow 3.3 and 2.11 schemas made by ``airflow db migrate``.

Changes are made the way Airflow makes them: DAG files parsed by ``airflow dags reserialize`` (3) or
``DagBag.sync_to_db`` (2), ``airflow dags trigger`` / ``pause``, runs created by Airflow's ``trigger_dag``
(:meth:`AirflowInstance.create_runs`); state moves the scheduler or a worker makes are written as the same
SQL updates (``updated_at`` moves with them, as Airflow's ``onupdate`` does).

Every test polls before and after one change and asserts exactly which fingerprints of which DAGs moved
(:func:`changes`): the DAG it touched, the fields it expects, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from proxy.airflow.auth2 import decode_facts
from proxy.airflow.snapshot import Snapshot
from proxy.airflow.source import NotAnAirflowDatabase, SqlVersionSource, VersionLookupError
from proxy.config import DatabaseConfig
from proxy.database import async_url, make_engine
from tests.airflow.harness import AirflowInstance, airflow_bin, ensure_airflow_venv, small_dag_ids
from tests.servers import free_port

pytestmark = pytest.mark.integration

N_SMALL = 8
DAG_IDS = small_dag_ids(N_SMALL)


# ---------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------


def _instance(major: int, admin_url: str, home: Path) -> Iterator[AirflowInstance]:
    instance = AirflowInstance(
        major, admin_url, home, serve=False, n_small=N_SMALL, big_tasks=0, min_serialized_dag_update_interval=0
    )
    with instance:
        yield instance


@pytest.fixture(scope="module")
def af3(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A migrated Airflow 3.3 database with small_000..small_007 serialized (no server)."""
    yield from _instance(3, postgres_admin_url, tmp_path_factory.mktemp("af3"))


@pytest.fixture(scope="module")
def af2(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A migrated Airflow 2.11 database with small_000..small_007 serialized (no server)."""
    yield from _instance(2, postgres_admin_url, tmp_path_factory.mktemp("af2"))


class Probe:
    """A version source on one database, plus a separate connection to change that database."""

    def __init__(self, db_url: str, **options: Any) -> None:
        self.engine = make_engine(DatabaseConfig(url=db_url, connect_timeout=5))
        self.writer: AsyncEngine = create_async_engine(async_url(db_url))
        self.source = SqlVersionSource(self.engine, **options)

    async def poll(self) -> Snapshot:
        return await self.source.poll()

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        async with self.writer.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    async def aclose(self) -> None:
        await self.writer.dispose()
        await self.engine.dispose()


@pytest.fixture
async def probe3(af3: AirflowInstance) -> AsyncIterator[Probe]:
    probe = Probe(af3.db_url)
    yield probe
    await probe.aclose()


@pytest.fixture
async def probe2(af2: AirflowInstance) -> AsyncIterator[Probe]:
    probe = Probe(af2.db_url)
    yield probe
    await probe.aclose()


def changes(before: Snapshot, after: Snapshot) -> dict[str, set[str]]:
    """``{dag_id: {"definition" | "state" | "listing" | "added" | "removed"}}`` plus ``"*": {"global_extra",
    "revoked", "schema"}`` for what moved between two polls."""
    moved: dict[str, set[str]] = {}
    for dag_id in before.dags.keys() | after.dags.keys():
        old, new = before.dags.get(dag_id), after.dags.get(dag_id)
        if old is None or new is None:
            moved[dag_id] = {"added" if old is None else "removed"}
            continue
        fields = {name for name in ("definition", "state", "listing") if getattr(old, name) != getattr(new, name)}
        if fields:
            moved[dag_id] = fields
    extra = {name for name in ("global_extra", "revoked", "schema") if getattr(before, name) != getattr(after, name)}
    if extra:
        moved["*"] = extra
    return moved


async def run_cli(instance: AirflowInstance, *args: str) -> None:
    await asyncio.to_thread(instance.airflow, *args)


async def run_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


async def latest_version(probe: Probe, dag_id: str) -> tuple[str, int, str, str]:
    rows = await probe.sql(
        "SELECT v.id::text, v.version_number, s.dag_hash, c.source_code_hash FROM dag_version v"
        " JOIN serialized_dag s ON s.dag_version_id = v.id JOIN dag_code c ON c.dag_version_id = v.id"
        " WHERE v.dag_id = :dag_id ORDER BY v.version_number DESC LIMIT 1",
        dag_id=dag_id,
    )
    version_id, number, dag_hash, source_hash = rows[0]
    return str(version_id), int(number), str(dag_hash), str(source_hash)


# ---------------------------------------------------------------------------------------------------------
# Airflow 3
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.airflow
class TestAirflow3:
    async def test_detects_airflow_3(self, probe3: Probe) -> None:
        info = await probe3.source.detect()
        assert info.major == 3
        assert info.revision == "d2f4e1b3c5a7"  # Airflow 3.3.2's head
        snapshot = await probe3.poll()
        assert snapshot.schema == info
        assert set(snapshot.dags) == set(DAG_IDS)

    async def test_polls_are_stable_and_count_statements(self, probe3: Probe) -> None:
        first = await probe3.poll()
        second = await probe3.poll()
        third = await probe3.poll()
        assert changes(first, second) == {} and changes(second, third) == {}
        # SET LOCAL statement_timeout, scalars, dags, attributes, import errors, unfinished runs, unfinished
        # TIs, run window, revoked tokens; the first poll also detects the schema and reads notes per DAG.
        assert second.statements == third.statements == 9
        assert first.statements > 9

    async def test_reserialize_touches_only_the_edited_dags(self, af3: AirflowInstance, probe3: Probe) -> None:
        """One reserialize with three kinds of edit (and every other DAG re-parsed unchanged)."""
        await run_thread(af3.create_runs, "small_002", ["success"])  # its version now has task instances
        versions = {dag_id: await latest_version(probe3, dag_id) for dag_id in ("small_001", "small_002", "small_003")}
        before = await probe3.poll()
        await run_thread(af3.touch_dag, "small_001", 1)  # new task, version without task instances
        await run_thread(af3.touch_dag, "small_002", 1)  # new task, version with task instances
        await run_thread(lambda: af3.touch_dag("small_003", 0, comment="only a comment"))
        await run_thread(af3.sync_dags)
        after = await probe3.poll()

        assert changes(before, after) == {dag_id: {"definition"} for dag_id in ("small_001", "small_002", "small_003")}
        rewritten = await latest_version(probe3, "small_001")
        assert rewritten[:2] == versions["small_001"][:2], "expected an in-place rewrite: same dag_version"
        assert rewritten[2] != versions["small_001"][2]
        new_version = await latest_version(probe3, "small_002")
        assert new_version[1] == versions["small_002"][1] + 1, "expected a new dag_version"
        comment_only = await latest_version(probe3, "small_003")
        assert comment_only[:3] == versions["small_003"][:3], "expected the same version and dag_hash"
        assert comment_only[3] != versions["small_003"][3], "expected a new source_code_hash"

    async def test_trigger_changes_state(self, af3: AirflowInstance, probe3: Probe) -> None:
        before = await probe3.poll()
        await run_cli(af3, "dags", "trigger", "small_004")
        after = await probe3.poll()
        assert changes(before, after) == {"small_004": {"state"}}

    async def test_task_instance_running_to_success_changes_state(self, af3: AirflowInstance, probe3: Probe) -> None:
        [run_id] = await run_thread(af3.create_runs, "small_005", ["running"])
        before = await probe3.poll()
        updated = await probe3.sql(
            "UPDATE task_instance SET state = 'success', end_date = now(), duration = 1, updated_at = now()"
            " WHERE dag_id = 'small_005' AND run_id = :run_id AND state = 'running' RETURNING task_id",
            run_id=run_id,
        )
        assert len(updated) == 1
        middle = await probe3.poll()
        assert changes(before, middle) == {"small_005": {"state"}}
        # The scheduler then schedules the next task: a state-less task instance becomes scheduled.
        await probe3.sql(
            "UPDATE task_instance SET state = 'scheduled', updated_at = now() WHERE id ="
            " (SELECT id FROM task_instance WHERE dag_id = 'small_005' AND run_id = :run_id AND state IS NULL"
            "  ORDER BY task_id LIMIT 1)",
            run_id=run_id,
        )
        after = await probe3.poll()
        assert changes(middle, after) == {"small_005": {"state"}}

    async def test_run_inserted_in_a_terminal_state_is_caught_by_the_id_window(self, probe3: Probe) -> None:
        """A run that started and finished between two polls is never in the unfinished sets."""
        before = await probe3.poll()
        await probe3.sql(_INSERT_RUN, dag_id="small_006", run_id="direct__1", minutes=1)
        after = await probe3.poll()
        assert changes(before, after) == {"small_006": {"state"}}

    async def test_late_commit_below_the_maximum_is_caught(self, probe3: Probe) -> None:
        """Run ids come from a sequence: a transaction that took id N may commit after one that took N+1."""
        before = await probe3.poll()
        async with probe3.writer.connect() as slow:
            _ = await slow.begin()
            await slow.execute(text(_INSERT_RUN), {"dag_id": "small_006", "run_id": "late__slow", "minutes": 2})
            await probe3.sql(_INSERT_RUN, dag_id="small_000", run_id="late__fast", minutes=3)
            middle = await probe3.poll()
            assert changes(before, middle) == {"small_000": {"state"}}
            await slow.commit()
        after = await probe3.poll()
        assert changes(middle, after) == {"small_006": {"state"}}

    async def test_burst_larger_than_the_window_is_read_whole(self, af3: AirflowInstance) -> None:
        """More new runs between two polls than run_id_window: every id above the previous maximum is read."""
        probe = Probe(af3.db_url, run_id_window=2)
        try:
            before = await probe.poll()
            for k, dag_id in enumerate(DAG_IDS[:5]):
                await probe.sql(_INSERT_RUN, dag_id=dag_id, run_id=f"burst__{k}", minutes=10 + k)
            after = await probe.poll()
            assert changes(before, after) == {dag_id: {"state"} for dag_id in DAG_IDS[:5]}
        finally:
            await probe.aclose()

    async def test_change_and_deletion_of_a_recent_finished_run(self, probe3: Probe) -> None:
        await probe3.sql(_INSERT_RUN, dag_id="small_006", run_id="recent__1", minutes=4)
        before = await probe3.poll()
        await probe3.sql(
            "UPDATE dag_run SET state = 'failed', updated_at = now()"
            " WHERE dag_id = 'small_006' AND run_id = 'recent__1'"
        )
        marked = await probe3.poll()
        assert changes(before, marked) == {"small_006": {"state"}}
        await probe3.sql("DELETE FROM dag_run WHERE dag_id = 'small_006' AND run_id = 'recent__1'")
        deleted = await probe3.poll()
        assert changes(marked, deleted) == {"small_006": {"state"}}

    async def test_finished_task_instance_of_an_old_run_is_left_to_state_max_age(self, af3: AirflowInstance) -> None:
        """The documented blind spot: a finished task instance changing to another finished state, in a run
        outside the id window, moves no polled row. proxy.versions bounds it with state_max_age."""
        [run_id] = await run_thread(af3.create_runs, "small_007", ["failed"])
        probe = Probe(af3.db_url, run_id_window=1)
        try:
            await probe.sql(_INSERT_RUN, dag_id="small_000", run_id="window__pusher", minutes=5)
            before = await probe.poll()
            await probe.sql(
                "UPDATE task_instance SET state = 'success', updated_at = now()"
                " WHERE dag_id = 'small_007' AND run_id = :run_id AND state = 'failed'",
                run_id=run_id,
            )
            after = await probe.poll()
            assert changes(before, after) == {}
        finally:
            await probe.aclose()

    async def test_notes_change_state_of_their_dag_only(self, probe3: Probe) -> None:
        await probe3.sql(_INSERT_RUN, dag_id="small_006", run_id="noted__1", minutes=6)
        before = await probe3.poll()
        await probe3.sql(
            "INSERT INTO dag_run_note (dag_run_id, content, created_at, updated_at)"
            " SELECT id, 'looked at it', now(), now() FROM dag_run WHERE run_id = 'noted__1'"
        )
        noted = await probe3.poll()
        assert changes(before, noted) == {"small_006": {"state"}}
        await probe3.sql("UPDATE dag_run_note SET content = 'fixed', updated_at = now()")
        edited = await probe3.poll()
        assert changes(noted, edited) == {"small_006": {"state"}}
        assert edited.statements == noted.statements == 10  # the per-DAG note query runs only on change
        unchanged = await probe3.poll()
        assert changes(edited, unchanged) == {} and unchanged.statements == 9

    async def test_unpause_and_pause_change_listing_only(self, af3: AirflowInstance, probe3: Probe) -> None:
        before = await probe3.poll()  # new DAGs start paused (dags_are_paused_at_creation)
        await run_cli(af3, "dags", "unpause", "small_007")
        unpaused = await probe3.poll()
        assert changes(before, unpaused) == {"small_007": {"listing"}}
        await run_cli(af3, "dags", "pause", "small_007")
        paused = await probe3.poll()
        assert changes(unpaused, paused) == {"small_007": {"listing"}}
        assert paused.dags["small_007"] == before.dags["small_007"]

    async def test_tags_and_stale_change_listing(self, probe3: Probe) -> None:
        before = await probe3.poll()
        await probe3.sql("INSERT INTO dag_tag (name, dag_id) VALUES ('extra', 'small_000')")
        tagged = await probe3.poll()
        await probe3.sql("UPDATE dag SET is_stale = true WHERE dag_id = 'small_001'")
        stale = await probe3.poll()
        await probe3.sql("UPDATE dag SET is_stale = false WHERE dag_id = 'small_001'")
        await probe3.sql("DELETE FROM dag_tag WHERE name = 'extra'")
        restored = await probe3.poll()
        assert changes(before, tagged) == {"small_000": {"listing"}}
        assert changes(tagged, stale) == {"small_001": {"listing"}}
        assert changes(before, restored) == {}

    async def test_parse_time_is_ignored_unless_asked(self, af3: AirflowInstance, probe3: Probe) -> None:
        strict = Probe(af3.db_url, ignore_parse_time=False)
        try:
            before, strict_before = await probe3.poll(), await strict.poll()
            await probe3.sql("UPDATE dag SET last_parsed_time = now(), last_parse_duration = 0.25")
            after, strict_after = await probe3.poll(), await strict.poll()
            assert changes(before, after) == {}
            assert changes(strict_before, strict_after) == {dag_id: {"listing"} for dag_id in DAG_IDS}
        finally:
            await strict.aclose()

    async def test_import_error_changes_global_extra(self, probe3: Probe) -> None:
        before = await probe3.poll()
        await probe3.sql(
            "INSERT INTO import_error (timestamp, filename, bundle_name, stacktrace)"
            " VALUES (now(), 'broken.py', 'dags-folder', 'SyntaxError')"
        )
        after = await probe3.poll()
        await probe3.sql("UPDATE import_error SET timestamp = now() + interval '1 minute'")  # re-parsed, same error
        reparsed = await probe3.poll()
        await probe3.sql("DELETE FROM import_error")
        assert changes(before, after) == {"*": {"global_extra"}}
        assert changes(after, reparsed) == {}

    async def test_revoked_tokens_with_expiry(self, probe3: Probe) -> None:
        expiry = time.time() + 3600
        await probe3.sql(
            "INSERT INTO revoked_token (jti, exp) VALUES ('live', to_timestamp(:exp)), ('old', now() - interval '1 s')",
            exp=expiry,
        )
        snapshot = await probe3.poll()
        assert set(snapshot.revoked) == {"live"}
        assert snapshot.revoked["live"] == pytest.approx(expiry, abs=1e-3)

    async def test_dag_deleted_disappears(self, af3: AirflowInstance, probe3: Probe) -> None:
        await probe3.sql(
            "INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type, partition_mapper_info,"
            " max_active_tasks, max_consecutive_failed_dag_runs, has_task_concurrency_limits)"
            " VALUES ('doomed', false, false, 'dags-folder', '', '{}', 16, 0, false)"
        )
        before = await probe3.poll()
        await probe3.sql("DELETE FROM dag WHERE dag_id = 'doomed'")
        after = await probe3.poll()
        assert changes(before, after) == {"doomed": {"removed"}, "*": {"global_extra"}}

    async def test_schema_revision_change_is_reported_and_detected_again(self, probe3: Probe) -> None:
        await probe3.poll()
        before = await probe3.poll()
        await probe3.sql("UPDATE alembic_version SET version_num = 'upgraded'")
        try:
            after = await probe3.poll()
        finally:
            await probe3.sql("UPDATE alembic_version SET version_num = :revision", revision=before.schema.revision)
        assert after.schema.revision == "upgraded"
        assert changes(before, after) == {"*": {"schema"}}
        assert after.statements > before.statements  # the tables were inspected again

    async def test_statement_timeout_is_mapped_and_the_next_poll_recovers(self, af3: AirflowInstance) -> None:
        probe = Probe(af3.db_url, statement_timeout=0.3)
        try:
            await probe.source.detect()
            async with probe.writer.begin() as locker:
                await locker.execute(text("LOCK TABLE dag IN ACCESS EXCLUSIVE MODE"))
                started = time.monotonic()
                with pytest.raises(VersionLookupError, match="statement timeout") as caught:
                    await probe.poll()
                assert time.monotonic() - started < 3
                assert caught.value.__cause__ is not None
            assert (await probe.poll()).schema.major == 3
        finally:
            await probe.aclose()


_INSERT_RUN = """
INSERT INTO dag_run (dag_id, run_id, run_type, triggered_by, state, logical_date, run_after, start_date, end_date,
                     created_at, updated_at, clear_number, span_status)
VALUES (:dag_id, :run_id, 'manual', 'test', 'success', now() - :minutes * interval '1 minute', now(), now(), now(),
        now(), now(), 0, 'not_started')
"""


# ---------------------------------------------------------------------------------------------------------
# Airflow 2
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.airflow
class TestAirflow2:
    async def test_detects_airflow_2_and_counts_statements(self, probe2: Probe) -> None:
        info = await probe2.source.detect()
        assert (info.major, info.revision) == (2, "5f2621c13b39")  # Airflow 2.11.2's head
        first = await probe2.poll()
        second = await probe2.poll()
        assert set(second.dags) == set(DAG_IDS)
        assert changes(first, second) == {}
        # No revoked_token table: the map carries Airflow 2's auth facts instead (the users fingerprint and the
        # logged-in sessions, proxy.airflow.auth2), under their own prefix.
        assert decode_facts(second.revoked).auth is not None
        assert all(name.startswith("a2:") for name in second.revoked)
        assert second.statements == 8 + 4  # DAG fingerprints; auth facts (sessions, ab_user, roles, permissions)

    async def test_definition_edit_and_comment_only_edit(self, af2: AirflowInstance, probe2: Probe) -> None:
        before = await probe2.poll()
        await run_thread(af2.touch_dag, "small_001", 1)
        await run_thread(af2.sync_dags, "small_001")
        edited = await probe2.poll()
        assert changes(before, edited) == {"small_001": {"definition"}}
        await asyncio.sleep(1.1)  # dag_code is rewritten only when the file is newer than the stored code
        await run_thread(lambda: af2.touch_dag("small_002", 0, comment="only a comment"))
        await run_thread(af2.sync_dags, "small_002")
        commented = await probe2.poll()
        assert changes(edited, commented) == {"small_002": {"definition"}}

    async def test_trigger_and_task_instance_change_state(self, af2: AirflowInstance, probe2: Probe) -> None:
        before = await probe2.poll()
        await run_cli(af2, "dags", "trigger", "small_003")
        triggered = await probe2.poll()
        assert changes(before, triggered) == {"small_003": {"state"}}
        [run_id] = await run_thread(af2.create_runs, "small_004", ["running"])
        started = await probe2.poll()
        await probe2.sql(
            "UPDATE task_instance SET state = 'success', updated_at = now()"
            " WHERE dag_id = 'small_004' AND run_id = :run_id AND state = 'running'",
            run_id=run_id,
        )
        finished = await probe2.poll()
        assert changes(started, finished) == {"small_004": {"state"}}

    async def test_unpause_changes_listing_and_notes_change_state(self, af2: AirflowInstance, probe2: Probe) -> None:
        before = await probe2.poll()
        await run_cli(af2, "dags", "unpause", "small_005")  # new DAGs start paused
        unpaused = await probe2.poll()
        assert changes(before, unpaused) == {"small_005": {"listing"}}
        [run_id] = await run_thread(af2.create_runs, "small_006", ["success"])
        with_run = await probe2.poll()
        await probe2.sql(
            "INSERT INTO task_instance_note (user_id, task_id, dag_id, run_id, map_index, content, created_at,"
            " updated_at) SELECT NULL, task_id, dag_id, run_id, map_index, 'hm', now(), now() FROM task_instance"
            " WHERE dag_id = 'small_006' AND run_id = :run_id LIMIT 1",
            run_id=run_id,
        )
        noted = await probe2.poll()
        assert changes(with_run, noted) == {"small_006": {"state"}}


# ---------------------------------------------------------------------------------------------------------
# Not Airflow, or not reachable
# ---------------------------------------------------------------------------------------------------------


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


async def test_not_an_airflow_database(postgres_admin_url: str) -> None:
    admin = create_async_engine(async_url(postgres_admin_url), isolation_level="AUTOCOMMIT")
    name = f"dagcache_empty_{os.getpid()}"
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
        probe = Probe(url)
        try:
            await probe.sql("CREATE TABLE dag (dag_id varchar(250) PRIMARY KEY)")
            with pytest.raises(NotAnAirflowDatabase) as caught:
                await probe.source.detect()
            message = str(caught.value)
            assert "is not an Airflow metadata database" in message
            assert "dag_version" in message and "serialized_dag" in message and "sql_alchemy_conn" in message
            with pytest.raises(NotAnAirflowDatabase):
                await probe.poll()
        finally:
            await probe.aclose()
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await admin.dispose()


async def test_refused_connection_is_a_version_lookup_error() -> None:
    engine = make_engine(DatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{free_port()}/airflow"))
    try:
        source = SqlVersionSource(engine)
        with pytest.raises(VersionLookupError, match="ConnectionRefusedError") as caught:
            await source.poll()
        assert isinstance(caught.value.__cause__, OSError)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("connect_timeout, poll_timeout", [(0.5, None), (30.0, 0.5)])
async def test_silent_server_times_out(connect_timeout: float, poll_timeout: float | None) -> None:
    """Whichever bound is shorter, the driver's connect timeout or the source's poll_timeout, ends the poll."""
    with _silent_server() as port:
        config = DatabaseConfig(url=f"postgresql://postgres@127.0.0.1:{port}/airflow", connect_timeout=connect_timeout)
        engine = make_engine(config)
        try:
            source = SqlVersionSource(engine, poll_timeout=poll_timeout)
            started = time.monotonic()
            with pytest.raises(VersionLookupError, match="timed out") as caught:
                await source.poll()
            assert time.monotonic() - started < 5
            assert isinstance(caught.value.__cause__, TimeoutError)
        finally:
            await engine.dispose()


# ---------------------------------------------------------------------------------------------------------
# SQLite: the same statements on another dialect (Airflow 3 schema migrated into a SQLite file)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite3_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = ensure_airflow_venv(3)
    home = tmp_path_factory.mktemp("af3sqlite")
    path = home / "airflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{path}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [str(airflow_bin(venv)), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    with sqlite3.connect(path) as conn:
        conn.executescript(_SQLITE_DATA)
    return path


_SQLITE_DATA = """
INSERT INTO dag_bundle (name, active) VALUES ('dags-folder', 1);
INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type, partition_mapper_info, max_active_tasks,
                 max_consecutive_failed_dag_runs, has_task_concurrency_limits)
VALUES ('lite_a', 0, 0, 'dags-folder', '', '{}', 16, 0, 0), ('lite_b', 0, 0, 'dags-folder', '', '{}', 16, 0, 0);
INSERT INTO dag_version (id, version_number, dag_id, bundle_name, created_at, last_updated)
VALUES ('00000000000000000000000000000001', 1, 'lite_a', 'dags-folder', '2025-01-01 00:00:00.000000',
        '2025-01-01 00:00:00.000000');
INSERT INTO serialized_dag (id, dag_id, data, created_at, last_updated, dag_hash, dag_version_id)
VALUES ('00000000000000000000000000000011', 'lite_a', '{}', '2025-01-01 00:00:00.000000',
        '2025-01-01 00:00:00.000000', 'hash1', '00000000000000000000000000000001');
INSERT INTO dag_code (id, dag_id, fileloc, created_at, last_updated, source_code, source_code_hash, dag_version_id)
VALUES ('00000000000000000000000000000021', 'lite_a', '/dags/a.py', '2025-01-01 00:00:00.000000',
        '2025-01-01 00:00:00.000000', '# a', 'src1', '00000000000000000000000000000001');
INSERT INTO revoked_token (jti, exp)
VALUES ('live', '2999-01-01 00:00:00.000000'), ('old', '2000-01-01 00:00:00.000000');
"""


@pytest.mark.airflow
async def test_sqlite_schema_polls_and_detects_changes(sqlite3_db: Path) -> None:
    probe = Probe(f"sqlite:///{sqlite3_db}")
    try:
        assert (await probe.source.detect()).major == 3
        before = await probe.poll()
        assert set(before.dags) == {"lite_a", "lite_b"}
        assert before.revoked == {"live": pytest.approx(32472144000.0, abs=1e-3)}  # 2999-01-01 UTC
        await probe.sql(
            "INSERT INTO dag_run (dag_id, run_id, run_type, state, run_after, updated_at, clear_number, span_status)"
            " VALUES ('lite_b', 'r1', 'manual', 'running', '2025-01-01 00:00:00', '2025-01-01 00:00:01.5', 0, 'x')"
        )
        running = await probe.poll()
        assert changes(before, running) == {"lite_b": {"state"}}
        await probe.sql("UPDATE dag_run SET updated_at = '2025-01-01 00:00:01.6'")
        touched = await probe.poll()
        assert changes(running, touched) == {"lite_b": {"state"}}
        await probe.sql("UPDATE serialized_dag SET dag_hash = 'hash2'")
        rewritten = await probe.poll()
        assert changes(touched, rewritten) == {"lite_a": {"definition"}}
    finally:
        await probe.aclose()

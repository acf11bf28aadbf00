"""`dagcache check` and `dagcache versions` against a real Airflow 3 metadata schema (and through PgBouncer)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.harness import AirflowInstance
from tests.conftest import REPO, dagcache_cmd
from tests.servers import free_port, pgbouncer

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.fixture(scope="module")
def airflow_db(airflow_admin_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    instance = AirflowInstance(3, airflow_admin_db_url, tmp_path_factory.mktemp("af3"), serve=False, n_small=3,
                               big_tasks=40)
    with instance:
        yield instance


def _run(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.toml"
    path.write_text(config)
    return subprocess.run(dagcache_cmd(*args, "--config", str(path)), cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_check_detects_the_airflow_schema(airflow_db: AirflowInstance, tmp_path: Path):
    config = f'[upstream]\nurl = "http://127.0.0.1:{free_port()}"\n[database]\nurl = "{airflow_db.db_url}"\n'
    proc = _run(tmp_path, config, "check")
    row = next(line for line in proc.stdout.splitlines() if line.startswith("database"))
    assert row.split()[1] == "ok", proc.stdout
    assert "Airflow 3 schema (alembic revision" in row


def test_versions_table_and_json_from_the_db(airflow_db: AirflowInstance, tmp_path: Path):
    config = f'[database]\nurl = "{airflow_db.db_url}"\n'
    table = _run(tmp_path, config, "versions")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("Airflow 3 (alembic ")
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[4:]}
    assert set(rows) == set(airflow_db.dag_ids)
    assert all(len(row) == 4 and row[1].isdigit() and row[2].isdigit() for row in rows.values())

    as_json = _run(tmp_path, config, "versions", "--json")
    data = json.loads(as_json.stdout)
    assert set(data["dags"]) == set(airflow_db.dag_ids)
    assert data["schema"].startswith("3:")
    assert data["generation"] >= max(v["state"] for v in data["dags"].values())


def test_versions_without_any_source_is_a_config_error(tmp_path: Path):
    proc = _run(tmp_path, "", "versions")
    assert proc.returncode == 2
    assert "dagcache versions needs [database] url" in proc.stderr


def test_versions_with_unreachable_db_fails_clearly(tmp_path: Path):
    proc = _run(tmp_path, f'[database]\nurl = "postgresql://a:secret@127.0.0.1:{free_port()}/x"\n', "versions")
    assert proc.returncode == 1
    assert "cannot read versions" in proc.stderr
    assert "secret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_versions_through_pgbouncer_transaction_mode(airflow_db: AirflowInstance, tmp_path: Path):
    """asyncpg behind PgBouncer in transaction mode: no prepared-statement cache, unique statement names."""
    with pgbouncer(airflow_db.db_url) as bounced:
        for _ in range(3):
            proc = _run(tmp_path, f'[database]\nurl = "{bounced}"\n', "versions", "--json")
            assert proc.returncode == 0, proc.stderr
            assert set(json.loads(proc.stdout)["dags"]) == set(airflow_db.dag_ids)
        # The same with asyncpg's statement cache on breaks once a server connection is reused: the setting
        # is what makes the difference.
        cached = [_run(tmp_path, f'[database]\nurl = "{bounced}"\nprepared_statements = true\n', "versions")
                  for _ in range(3)]
        assert any("DuplicatePreparedStatementError" in proc.stderr for proc in cached)

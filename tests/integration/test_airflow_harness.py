"""Smoke tests of tests/airflow/harness.py against a real Airflow 3.3 and Airflow 2.11.

They need PostgreSQL (``postgres_admin_url`` or ``$DAGCACHE_TEST_DATABASE_URL``) and PyPI on
first use (each Airflow venv is installed once, ~35 s). Startup is ~12 s per instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.airflow.harness import BIG_DAG_ID, AirflowInstance, big_dag_task_count, small_dag_ids

pytestmark = pytest.mark.airflow

EXPECTED_DAG_IDS = [*small_dag_ids(10), BIG_DAG_ID]
BIG_TASKS = big_dag_task_count(1000)


def _dag_ids(listing: Any) -> list[str]:
    return sorted(dag["dag_id"] for dag in listing["dags"])


def _task_nodes(nodes: list[dict[str, Any]]) -> int:
    count = 0
    for node in nodes:
        children = node.get("children")
        if children:
            count += _task_nodes(children)
        elif node.get("type") == "task":
            count += 1
    return count


class TestAirflow3:
    def test_lists_the_generated_dags(self, airflow3: AirflowInstance) -> None:
        assert airflow3.dag_ids == EXPECTED_DAG_IDS
        response = airflow3.request("GET", "/api/v2/dags?limit=100", user="admin")
        assert response.status == 200
        assert _dag_ids(response.json()) == sorted(EXPECTED_DAG_IDS)

    def test_token_and_roles(self, airflow3: AirflowInstance) -> None:
        assert airflow3.token("admin").count(".") == 2
        assert airflow3.request("GET", "/api/v2/dags").status == 401
        assert airflow3.request("GET", "/api/v2/dags", user="viewer1").status == 200
        patch = airflow3.request(
            "PATCH",
            "/api/v2/dags/small_000",
            user="viewer1",
            headers={"Content-Type": "application/json"},
            body=b'{"is_paused": false}',
        )
        assert patch.status == 403
        cookie = airflow3.session_cookie("op1")
        assert airflow3.request("GET", "/ui/dags?limit=5", headers={"Cookie": cookie}).status == 200

    def test_big_dag_structure_has_about_a_thousand_tasks(self, airflow3: AirflowInstance) -> None:
        data = airflow3.get_json(f"/ui/structure/structure_data?dag_id={BIG_DAG_ID}")
        assert isinstance(data, dict)
        # The mapped task is one node; the 8 task groups are nodes with children.
        assert _task_nodes(data["nodes"]) == BIG_TASKS
        assert 1000 <= BIG_TASKS <= 1010

    def test_create_runs(self, airflow3: AirflowInstance) -> None:
        run_ids = airflow3.create_runs(BIG_DAG_ID, ["success", "running"])
        runs = airflow3.get_json(f"/api/v2/dags/{BIG_DAG_ID}/dagRuns?limit=100")
        assert isinstance(runs, dict)
        states = {run["dag_run_id"]: run["state"] for run in runs["dag_runs"]}
        assert [states[run_id] for run_id in run_ids] == ["success", "running"]
        tis = airflow3.get_json(f"/api/v2/dags/{BIG_DAG_ID}/dagRuns/{run_ids[0]}/taskInstances?limit=1")
        assert isinstance(tis, dict)
        assert tis["total_entries"] == BIG_TASKS - 1 + 4  # the mapped task has 4 map indexes


class TestAirflow2:
    def test_lists_the_generated_dags(self, airflow2: AirflowInstance) -> None:
        response = airflow2.request("GET", "/api/v1/dags?limit=100", user="admin")
        assert response.status == 200
        assert _dag_ids(response.json()) == sorted(EXPECTED_DAG_IDS)

    def test_basic_auth_and_session_cookie(self, airflow2: AirflowInstance) -> None:
        assert airflow2.request("GET", "/api/v1/dags").status == 403
        assert airflow2.request("GET", "/api/v1/dags", user="viewer1").status == 200
        cookie = airflow2.session_cookie("viewer1")
        graph = airflow2.request("GET", f"/object/graph_data?dag_id={BIG_DAG_ID}", headers={"Cookie": cookie})
        assert graph.status == 200
        tasks = airflow2.get_json(f"/api/v1/dags/{BIG_DAG_ID}/tasks")
        assert isinstance(tasks, dict)
        assert tasks["total_entries"] == BIG_TASKS

    def test_create_runs(self, airflow2: AirflowInstance) -> None:
        (run_id,) = airflow2.create_runs("small_001", ["failed"])
        run = airflow2.get_json(f"/api/v1/dags/small_001/dagRuns/{run_id}")
        assert isinstance(run, dict)
        assert run["state"] == "failed"


def test_schema_only_instance(airflow_admin_db_url: str, tmp_path: Path) -> None:
    with AirflowInstance(3, airflow_admin_db_url, tmp_path, serve=False, n_small=2, big_tasks=0) as instance:
        assert instance.base_url == ""
        assert not instance.running
        result = instance.venv_python(
            "-c",
            "import sys, psycopg2\n"
            "with psycopg2.connect(sys.argv[1]) as c, c.cursor() as cur:\n"
            "    cur.execute('SELECT dag_id FROM serialized_dag ORDER BY dag_id')\n"
            "    print(','.join(r[0] for r in cur))",
            instance.db_url,
        )
        assert result.stdout.split() == ["small_000,small_001"]

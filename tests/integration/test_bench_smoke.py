"""`dagcache bench` end to end through the installed command line, with real Redis and metadata DB: a few seconds
against the real Airflow 3.3, dagcache and nginx; about a minute against the real Airflow 2.11 webserver (4 workers)
and dagcache, with the definition audit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proxy.airflow.local import venv_python
from tests.airflow.harness import AirflowInstance
from tests.conftest import dagcache_cmd
from tests.servers import free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AUDIT_DAG = "small_008"  # no other test uses it; the bench restores it anyway
PNG = b"\x89PNG\r\n\x1a\n"


@contextmanager
def running_dagcache(airflow: AirflowInstance, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """``dagcache serve`` (one worker, a 0.2 s version poll) in front of ``airflow``; its URL once it serves."""
    port = free_port()
    env = {
        **os.environ,
        "DAGCACHE_UPSTREAM__URL": airflow.base_url,
        "DAGCACHE_DATABASE__URL": airflow.db_url,
        "DAGCACHE_REDIS__URL": redis_url,
        "DAGCACHE_REDIS__KEY_PREFIX": f"bench{port}",
        "DAGCACHE_SERVER__HOST": "127.0.0.1",
        "DAGCACHE_SERVER__PORT": str(port),
        "DAGCACHE_SERVER__WORKERS": "1",
        "DAGCACHE_ADMIN__PORT": str(free_port()),
        "DAGCACHE_VERSIONS__POLL_INTERVAL": "0.2",
        "DAGCACHE_LOG__LEVEL": "warning",
    }
    version = "/api/v2/version" if airflow.major >= 3 else "/api/v1/version"
    with open(tmp_path / "dagcache.log", "w") as log:
        proc = subprocess.Popen(dagcache_cmd("serve"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # ready once the version map is there: a GET answers without 503
            try:
                with urllib.request.urlopen(url + version, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "dagcache.log").read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def dagcache_url(airflow3: AirflowInstance, redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_dagcache(airflow3, redis_url, tmp_path) as url:
        yield url


@pytest.fixture
def dagcache2_url(airflow2: AirflowInstance, redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_dagcache(airflow2, redis_url, tmp_path) as url:
        yield url


def test_a_short_run_fills_every_column_for_every_target(airflow3: AirflowInstance, dagcache_url: str, tmp_path: Path):
    assert shutil.which("nginx") or Path("/usr/sbin/nginx").exists(), "nginx is needed (apt install nginx)"
    paused_before = airflow3.get_json(f"/api/v2/dags/{AUDIT_DAG}")["is_paused"]  # type: ignore[index]
    out = tmp_path / "out"
    assert airflow3._process is not None
    # Phases of 3 s with a 1 s UI refresh: every user opens the app, the list and a DAG, then polls twice.
    # fmt: off
    command = dagcache_cmd(
        "bench", "--upstream", airflow3.base_url, "--proxy", dagcache_url, "--nginx",
        "--users", "2", "--duration", "6s", "--rounds", "2", "--refresh", "1s", "--out", str(out),
        "--db", airflow3.db_url,
        "--upstream-pid", str(airflow3._process.pid),  # the api-server's parent: its workers are its children
        "--audit", "--audit-dag", AUDIT_DAG, "--audit-interval", "500ms",
    )
    # fmt: on
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    document = json.loads((out / "results.json").read_text())
    rows = {row["target"]: row for row in document["rows"]}
    assert set(rows) == {"direct", "dagcache", "nginx"}
    for target, row in rows.items():
        empty = [column for column in document["columns"] if row[column] is None]
        assert not empty, f"{target}: no value for {empty}"
        assert row["requests"] > 0 and row["users"] == 2 and row["rounds"] == 2
    assert rows["dagcache"]["hit_ratio"] > 0
    assert rows["nginx"]["hit_ratio"] > 0
    assert rows["direct"]["hit_ratio"] == 0
    assert rows["dagcache"]["regressions"] == 0
    assert len(document["phases"]) == 6  # 3 targets x 2 rounds
    assert document["meta"]["airflow"] == airflow3.version

    for name in ("latency.png", "db_statements.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    table = (out / "results.md").read_text()
    assert "| dagcache | 2 |" in table and "| nginx | 2 |" in table and "| direct | 2 |" in table
    assert "| dagcache | 2 |" in result.stdout

    # --audit put the DAG back as it found it and removed the runs it triggered.
    assert airflow3.get_json(f"/api/v2/dags/{AUDIT_DAG}")["is_paused"] == paused_before  # type: ignore[index]
    assert airflow3.get_json(f"/api/v2/dags/{AUDIT_DAG}/dagRuns")["total_entries"] == 0  # type: ignore[index]


def test_an_airflow2_run_counts_definition_regressions_per_client_next_to_dagcaches_none(
    airflow2: AirflowInstance, dagcache2_url: str, tmp_path: Path
):
    """Detected as Airflow 2 from /api/v1/version; users poll big_dag's grid and graph and the DAG lists with their
    session cookies; the audit writes its own DAG into the DAGs folder, stores each change with Airflow's python
    and deletes it at the end."""
    out = tmp_path / "out"
    assert airflow2._process is not None
    # Airflow's own settings, so that the --airflow-python helper reaches the same metadata DB as the webserver.
    env = {**os.environ, **{k: v for k, v in airflow2.env.items() if k.startswith("AIRFLOW")}}
    # Two phases of 36 s: in each, one change pair, and after its B more than dagcache's 12 s convergence window.
    # fmt: off
    command = dagcache_cmd(
        "bench", "--upstream", airflow2.base_url, "--proxy", dagcache2_url,
        "--users", "2", "--duration", "36s", "--rounds", "1", "--refresh", "1s", "--out", str(out),
        "--db", airflow2.db_url, "--upstream-pid", str(airflow2._process.pid),
        "--audit", "--dags-folder", str(airflow2.dags_folder), "--airflow-python", str(venv_python(airflow2.venv)),
        "--audit-interval", "15s",
    )
    # fmt: on
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    document = json.loads((out / "results.json").read_text())
    assert document["meta"]["airflow_major"] == 2 and document["meta"]["airflow"] == airflow2.version
    assert document["meta"]["audit_dag"] == "dagcache_bench_audit" and document["meta"]["dag"] == "big_dag"
    rows = {row["target"]: row for row in document["rows"]}
    assert set(rows) == {"direct", "dagcache"}
    for target, row in rows.items():
        empty = [column for column in document["columns"] if row[column] is None]
        assert not empty, f"{target}: no value for {empty}"
        assert row["requests"] > 0 and row["errors"] == 0
    assert rows["dagcache"]["hit_ratio"] > 0 and rows["direct"]["hit_ratio"] == 0
    assert rows["dagcache"]["regressions"] == 0
    assert rows["dagcache"]["stale_p50_ms"] > 10_000  # the convergence window, by design
    clients = {c["target"]: c["clients"] for c in document["audit_clients"]}
    assert set(clients["direct"]) == set(clients["dagcache"]) == {"watcher 0", "watcher 1"}
    assert set(clients["dagcache"].values()) == {0}
    assert all(phase["audit_failed"] == phase["audit_unprimed"] == 0 for phase in document["phases"])
    statuses = {s for phase in document["phases"] for s in phase["statuses"]}
    assert statuses == {"200"}  # the cookies held: no redirect to /login/
    print(f"direct regressions {clients['direct']}, dagcache {clients['dagcache']}")

    for name in ("latency.png", "db_statements.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    table = (out / "results.md").read_text()
    assert "| direct | 2 |" in table and "| dagcache | 2 | watcher 0: 0, watcher 1: 0 |" in table
    assert "upstream_convergence" in table  # the note on dagcache's staleness

    # The audit DAG is gone again: its file and the DAG itself.
    assert not (airflow2.dags_folder / "dagcache_bench_audit.py").exists()
    assert airflow2.request("GET", "/api/v1/dags/dagcache_bench_audit", user="admin").status == 404

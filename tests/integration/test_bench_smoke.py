"""`dagcache bench` end to end: a few seconds against the real Airflow 3.3, dagcache (real Redis and
metadata DB) and nginx, through the installed command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.harness import AirflowInstance
from tests.conftest import dagcache_cmd
from tests.servers import free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AUDIT_DAG = "small_008"  # no other test uses it; the bench restores it anyway
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def dagcache_url(airflow3: AirflowInstance, redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DAGCACHE_UPSTREAM__URL": airflow3.base_url,
        "DAGCACHE_DATABASE__URL": airflow3.db_url,
        "DAGCACHE_REDIS__URL": redis_url,
        "DAGCACHE_REDIS__KEY_PREFIX": f"bench{port}",
        "DAGCACHE_SERVER__HOST": "127.0.0.1",
        "DAGCACHE_SERVER__PORT": str(port),
        "DAGCACHE_SERVER__WORKERS": "1",
        "DAGCACHE_ADMIN__PORT": str(free_port()),
        "DAGCACHE_VERSIONS__POLL_INTERVAL": "0.2",
        "DAGCACHE_LOG__LEVEL": "warning",
    }
    with open(tmp_path / "dagcache.log", "w") as log:
        proc = subprocess.Popen(dagcache_cmd("serve"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # ready once the version map is there: a GET answers without 503
            try:
                with urllib.request.urlopen(url + "/api/v2/version", timeout=5) as resp:
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

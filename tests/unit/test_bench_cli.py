"""``dagcache bench`` refuses bad input with one line and a usage exit code, before any load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port

_MAIN = "import sys\n{prelude}\nfrom proxy.cli import main\nsys.exit(main(sys.argv[1:]))"


def bench(*args: str, prelude: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    code = _MAIN.format(prelude=prelude)
    return subprocess.run(
        [sys.executable, "-c", code, "bench", *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def closed() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_missing_matplotlib_is_one_clear_line_before_any_connection(tmp_path: Path):
    result = bench(
        "--upstream",
        closed(),
        "--proxy",
        closed(),
        "--out",
        str(tmp_path / "o"),
        prelude="sys.modules['matplotlib'] = None",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dagcache bench: PNG plots need matplotlib: pip install 'dagcache[bench]' (or run with --no-plots)"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "10,x"], "--users wants comma-separated positive integers, got '10,x'"),
        (["--duration", "soon"], "a duration looks like 30s, 2m, 500ms or 10 (seconds), got 'soon'"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--server-pid", "1"], "--server-pid only makes sense with --pin"),
        (["--airflow", "4"], "--airflow must be 2 or 3, got '4'"),
        (["--airflow", "3", "--dag", "big_dag"], "--dag: only for Airflow 2"),
        (
            ["--dags-folder", "/tmp", "--airflow-python", "python3"],
            "--dags-folder, --airflow-python: only with --audit",
        ),
        (
            ["--airflow", "2", "--audit", "--airflow-python", "python3"],
            "--audit on Airflow 2 needs --dags-folder (the webserver's DAGs folder)",
        ),
        (
            ["--airflow", "2", "--audit", "--dags-folder", "/tmp"],
            "--audit on Airflow 2 needs either --airflow-python or --audit-sync (one of them)",
        ),
        (
            ["--airflow", "2", "--audit", "--dags-folder", "/tmp", "--airflow-python", "p", "--audit-sync", "true"],
            "--audit on Airflow 2 needs either --airflow-python or --audit-sync (one of them)",
        ),
        (
            ["--airflow", "2", "--audit", "--dags-folder", "/tmp", "--airflow-python", "/nonexistent/python"],
            "--airflow-python /nonexistent/python: no such executable",
        ),
        (
            ["--airflow", "2", "--audit", "--dags-folder", "/tmp", "--audit-sync", "true", "--audit-dag", "../x"],
            "--audit-dag must be letters, digits, '_', '-' or '.', got '../x'",
        ),
    ],
)
def test_bad_arguments_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str):
    result = bench("--upstream", closed(), "--proxy", closed(), "--no-plots", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"dagcache bench: {message}"]


def test_a_url_that_is_not_http_is_refused(tmp_path: Path):
    result = bench("--upstream", "airflow:8080", "--proxy", closed(), "--no-plots", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == "dagcache bench: --upstream must be an http(s):// URL, got 'airflow:8080'"


def test_an_unreachable_upstream_is_one_line_with_exit_code_1(tmp_path: Path):
    upstream = closed()
    result = bench("--upstream", upstream, "--proxy", closed(), "--users", "1", "--no-plots", "--out", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dagcache bench: cannot reach the upstream {upstream}")
    assert "Traceback" not in result.stderr

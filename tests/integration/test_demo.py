"""``dagcache demo`` as a user runs it: a real process that brings up Airflow 3.3 (or, with ``--airflow 2``,
an Airflow 2.11 webserver with 4 gunicorn workers) and dagcache, serves the 1,000-task DAG through the cache,
stops cleanly on a signal (nothing left running) and ``--clean`` removes what it made.

The demo reuses the shared Airflow venvs (installed by the harness, ``~/.cache/dagcache/airflow-venvs``), so
nothing is installed here after the first test session; each demo start takes about a minute.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from proxy.airflow.examples import BIG_DAG_ID, big_dag_task_count
from proxy.airflow.local import group_pids
from proxy.demo.workdir import instance_name
from tests.airflow.harness import ensure_airflow_venv
from tests.conftest import REPO, dagcache_cmd
from tests.servers import free_port

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]

BIG_TASKS = big_dag_task_count(1000)


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    directory: Path
    port: int
    stdout: Path
    stderr: Path
    password: str = ""
    airflow_pid: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


StartDemo = Callable[..., Demo]


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[StartDemo]:
    """Start ``dagcache demo --dir ... --port ... --admin-port ... *args`` and wait for its banner."""
    demos: list[Demo] = []

    def start(*args: str, directory: Path | None = None) -> Demo:
        # Airflow installed where the demo looks first, so the demo does not install it again.
        ensure_airflow_venv(int(args[args.index("--airflow") + 1]) if "--airflow" in args else 3)
        directory = directory or tmp_path / "demo"
        port = free_port()
        stdout, stderr = tmp_path / f"demo{len(demos)}.out", tmp_path / f"demo{len(demos)}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                dagcache_cmd("demo", "--dir", str(directory), "--port", str(port), "--admin-port", str(free_port()))
                + list(args),
                cwd=REPO,
                stdout=out,
                stderr=err,
            )
        demo = Demo(proc, directory, port, stdout, stderr)
        demos.append(demo)
        _wait_for_banner(demo)
        return demo

    yield start
    for demo in demos:
        if demo.proc.poll() is None:
            demo.proc.send_signal(signal.SIGINT)
            try:
                demo.proc.wait(60)
            except subprocess.TimeoutExpired:
                demo.proc.kill()
                demo.proc.wait(10)
        if demo.airflow_pid:
            for pid in group_pids(demo.airflow_pid):  # never leave an Airflow server behind, even on failure
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _wait_for_banner(demo: Demo, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = demo.stdout.read_text(errors="replace")
        if "Stop with Ctrl-C" in out:
            login = re.search(r"login\s+admin / (\S+)", out)
            pid = re.search(r"(?:api-server|webserver) pid (\d+)", out)
            assert login and pid, out
            demo.password, demo.airflow_pid = login.group(1), int(pid.group(1))
            return
        if demo.proc.poll() is not None:
            pytest.fail(f"dagcache demo exited with {demo.proc.returncode}:\n{demo.output()}")
        time.sleep(0.5)
    pytest.fail(f"no banner within {timeout:.0f} s:\n{demo.output()}")


def _request(
    url: str, *, token: str = "", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers.items()), error.read()


def _login(demo: Demo) -> str:
    body = json.dumps({"username": "admin", "password": demo.password}).encode()
    status, _, answer = _request(f"{demo.base}/auth/token", body=body)
    assert status in (200, 201), answer[:300]
    token = json.loads(answer)["access_token"]
    assert isinstance(token, str)
    return token


def _assert_big_dag_served_from_cache(demo: Demo) -> None:
    token = _login(demo)
    url = f"{demo.base}/api/v2/dags/{BIG_DAG_ID}/tasks"
    first = _request(url, token=token)
    second = _request(url, token=token)
    assert (first[0], first[1].get("X-Cache")) == (200, "MISS"), demo.output()
    assert (second[0], second[1].get("X-Cache")) == (200, "HIT"), demo.output()
    assert first[2] == second[2]
    assert json.loads(second[2])["total_entries"] == BIG_TASKS
    status, headers, runs = _request(f"{demo.base}/api/v2/dags/{BIG_DAG_ID}/dagRuns", token=token)
    assert status == 200
    assert sorted(run["state"] for run in json.loads(runs)["dag_runs"]) == ["failed", "success", "success"]


def _stop(demo: Demo, sig: signal.Signals) -> None:
    assert group_pids(demo.airflow_pid), "the Airflow server should be running while the demo is"
    demo.proc.send_signal(sig)
    assert demo.proc.wait(90) == 0, demo.output()
    assert group_pids(demo.airflow_pid) == [], "the Airflow server (or one of its workers) outlived the demo"
    assert (demo.directory / "demo.json").exists(), "the directory is kept for a fast restart"


def _clean(directory: Path) -> str:
    result = subprocess.run(
        dagcache_cmd("demo", "--dir", str(directory), "--clean"), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert not directory.exists()
    return result.stdout


async def _databases(admin_url: str) -> set[str]:
    engine = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:
            return {row[0] for row in await conn.execute(text("SELECT datname FROM pg_database"))}
    finally:
        await engine.dispose()


def test_demo_on_postgres_and_redis_serves_the_big_dag_from_the_cache_and_cleans_up(
    start_demo: StartDemo, postgres_admin_url: str, redis_url: str
) -> None:
    demo = start_demo("--postgres", postgres_admin_url, "--redis", redis_url)
    banner = demo.stdout.read_text()
    assert f"PostgreSQL database {instance_name(demo.directory)}" in banner
    assert f"Redis {redis_url}" in banner
    _assert_big_dag_served_from_cache(demo)

    _stop(demo, signal.SIGINT)
    assert instance_name(demo.directory) in asyncio.run(_databases(postgres_admin_url))

    removed = _clean(demo.directory)
    assert f"PostgreSQL database {instance_name(demo.directory)}" in removed
    assert instance_name(demo.directory) not in asyncio.run(_databases(postgres_admin_url))


def test_demo_falls_back_to_sqlite_and_the_embedded_store_and_restarts_from_its_directory(
    start_demo: StartDemo,
) -> None:
    nothing = f"127.0.0.1:{free_port()}"  # a port nobody listens on
    args = ("--postgres", f"postgresql://postgres@{nothing}/postgres", "--redis", f"redis://{nothing}/0")
    demo = start_demo(*args)
    banner = demo.stdout.read_text()
    assert "SQLite" in banner and "PostgreSQL not used" in banner
    assert "embedded in-process store" in banner
    _assert_big_dag_served_from_cache(demo)
    _stop(demo, signal.SIGTERM)

    # A restart from the same directory skips the setup and keeps the login, the DB and its runs.
    again = start_demo(*args, directory=demo.directory)
    assert again.password == demo.password
    assert "airflow db migrate" not in again.stderr.read_text()
    _assert_big_dag_served_from_cache(again)

    # If the api-server dies, the demo says so and stops instead of answering 502 forever.
    os.killpg(again.airflow_pid, signal.SIGKILL)
    assert again.proc.wait(60) == 1
    assert "the Airflow api-server exited" in again.stderr.read_text()
    assert "removed" in _clean(demo.directory)


# -- dagcache demo --airflow 2 -----------------------------------------------------------------------------------


def _basic(demo: Demo) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{demo.password}".encode()).decode()}


def _login_through_the_proxy(demo: Demo) -> str:
    """Log in to the Airflow 2 UI through dagcache as a browser does (``/login/`` form with its CSRF token); the
    ``Cookie`` header value of the session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    with opener.open(f"{demo.base}/login/", timeout=60) as response:
        page = response.read().decode()
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found, page[:500]
    form = urllib.parse.urlencode({"csrf_token": found.group(1), "username": "admin", "password": demo.password})
    try:
        opener.open(f"{demo.base}/login/", data=form.encode(), timeout=60).close()
        pytest.fail("POST /login/ should redirect")
    except urllib.error.HTTPError as error:
        error.close()
        assert error.code == 302 and "/login" not in error.headers.get("Location", ""), error.headers
    sessions = [cookie.value for cookie in jar if cookie.name == "session" and cookie.value]
    assert len(sessions) == 1, list(jar)
    return f"session={sessions[0]}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _first_cached(url: str, headers: dict[str, str], timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` until dagcache caches it. A session that logged in through dagcache passes through until a
    version poll that started after the login has been applied (proxy.airflow.auth2: about 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = _request(url, headers=headers)
        if answer[1].get("X-Cache") != "BYPASS" or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def _gunicorn_workers(pgid: int) -> list[int]:
    workers = []
    for pid in group_pids(pgid):
        try:
            if b"gunicorn: worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except OSError:
            pass
    return workers


def test_airflow2_demo_serves_big_dag_views_through_the_cache_and_cleans_up(
    start_demo: StartDemo, postgres_admin_url: str, redis_url: str, tmp_path: Path
) -> None:
    demo = start_demo("--airflow", "2", "--postgres", postgres_admin_url, "--redis", redis_url)
    banner = demo.stdout.read_text()
    assert "dagcache demo is up: Airflow 2.11.2" in banner
    assert f"PostgreSQL database {instance_name(demo.directory)}" in banner
    assert f"{demo.base}/dags/{BIG_DAG_ID}/grid" in banner
    assert f"(webserver pid {demo.airflow_pid})" in banner
    assert "airflow users create admin (role Admin)" in demo.stderr.read_text()
    assert len(_gunicorn_workers(demo.airflow_pid)) == 4

    # The REST API with Basic auth: the 1,003 tasks are rendered once, then served from the cache.
    url = f"{demo.base}/api/v1/dags/{BIG_DAG_ID}/tasks"
    first = _request(url, headers=_basic(demo))
    second = _request(url, headers=_basic(demo))
    assert (first[0], first[1].get("X-Cache")) == (200, "MISS"), demo.output()
    assert (second[0], second[1].get("X-Cache")) == (200, "HIT"), demo.output()
    assert first[2] == second[2]
    assert json.loads(second[2])["total_entries"] == BIG_TASKS
    status, _, runs = _request(f"{demo.base}/api/v1/dags/{BIG_DAG_ID}/dagRuns", headers=_basic(demo))
    assert status == 200
    assert sorted(run["state"] for run in json.loads(runs)["dag_runs"]) == ["failed", "success", "success"]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:not-the-password").decode()}
    assert _request(url, headers=wrong)[0] == 403

    # The UI's graph JSON with the session cookie of a login through dagcache: MISS, then HIT.
    cookie = {"Cookie": _login_through_the_proxy(demo)}
    graph = f"{demo.base}/object/graph_data?dag_id={BIG_DAG_ID}"
    status, headers, body = _first_cached(graph, cookie)
    assert (status, headers.get("X-Cache")) == (200, "MISS"), demo.output()
    status, headers, again = _request(graph, headers=cookie)
    assert (status, headers.get("X-Cache")) == (200, "HIT")
    assert again == body and len(json.loads(body)["nodes"]["children"]) > 8

    _stop(demo, signal.SIGINT)
    assert "stopping the Airflow webserver" in demo.stderr.read_text()
    assert instance_name(demo.directory) in asyncio.run(_databases(postgres_admin_url))

    # The directory holds an Airflow 2 demo: the (default) Airflow 3 demo refuses it, saying what to do.
    refused = subprocess.run(
        dagcache_cmd(
            "demo", "--dir", str(demo.directory), "--port", str(free_port()), "--admin-port", str(free_port())
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"dagcache demo: {demo.directory} holds an Airflow 2.11.2 demo, not Airflow 3.3.2: run it with --airflow 2, "
        f"choose another --dir, or remove it with `dagcache demo --dir {demo.directory} --clean`"
    ]

    removed = _clean(demo.directory)
    assert f"PostgreSQL database {instance_name(demo.directory)}" in removed
    assert instance_name(demo.directory) not in asyncio.run(_databases(postgres_admin_url))


def test_airflow2_demo_on_sqlite_caches_the_ui_for_a_session_and_restarts_without_a_new_user(
    start_demo: StartDemo,
) -> None:
    args = ("--airflow", "2", "--sqlite", "--no-redis")
    demo = start_demo(*args)
    banner = demo.stdout.read_text()
    assert "SQLite" in banner and "embedded in-process store" in banner
    cookie = {"Cookie": _login_through_the_proxy(demo)}
    for view in (f"/object/graph_data?dag_id={BIG_DAG_ID}", f"/object/grid_data?dag_id={BIG_DAG_ID}&num_runs=25"):
        status, headers, body = _first_cached(demo.base + view, cookie)
        assert (status, headers.get("X-Cache")) == (200, "MISS"), (view, demo.output())
        status, headers, cached = _request(demo.base + view, headers=cookie)
        assert (status, headers.get("X-Cache"), cached) == (200, "HIT", body), view
    _stop(demo, signal.SIGTERM)

    # A restart skips the setup (the FAB user is not created again) and the same login and session still work.
    again = start_demo(*args, directory=demo.directory)
    assert again.password == demo.password
    assert "airflow users create" not in again.stderr.read_text()
    status, headers, _ = _first_cached(f"{again.base}/api/v1/dags/{BIG_DAG_ID}/tasks", _basic(again))
    assert (status, headers.get("X-Cache")) == (200, "MISS"), again.output()
    graph = f"{again.base}/object/graph_data?dag_id={BIG_DAG_ID}"
    assert _request(graph, headers=cookie)[1].get("X-Cache") == "MISS"  # a new embedded store
    assert _request(graph, headers=cookie)[1].get("X-Cache") == "HIT"
    _stop(again, signal.SIGINT)
    assert "removed" in _clean(demo.directory)

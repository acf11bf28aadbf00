"""``dagcache`` as a user runs it: a real process, real signals, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO, UpstreamServer, dagcache_cmd
from tests.servers import free_port, wait_port

pytestmark = pytest.mark.functional


def _write_config(tmp_path: Path, upstream: str, **extra: str) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"shutdown_grace = {extra.pop('grace', '10')}",
        "[upstream]",
        f'url = "{upstream}"',
        "[admin]",
        'host = "127.0.0.1"',
        f"port = {admin}",
        "[log]",
        'format = "json"',
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, port, admin


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, admin: int, log: Path) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin}"
        self.log = log


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream: str, *args: str, **extra: str) -> Served:
        config, port, admin = _write_config(tmp_path, upstream, **extra)
        log = tmp_path / f"serve-{len(procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                dagcache_cmd("serve", "--config", str(config), *args),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        procs.append(proc)
        wait_port(port, 20)
        wait_port(admin, 20)
        return Served(proc, port, admin, log)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def test_sigterm_lets_in_flight_requests_finish(serve, upstream: UpstreamServer):
    served = serve(upstream.url)
    async with aiohttp.ClientSession() as client:
        pending = asyncio.ensure_future(client.get(served.base + "/slow?delay=1.5"))
        await asyncio.sleep(0.5)
        served.proc.send_signal(signal.SIGTERM)
        resp = await asyncio.wait_for(pending, 10)
        assert resp.status == 200
        assert await resp.json() == {"slept": 1.5}
    assert served.proc.wait(10) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as client, client.get(served.base + "/x"):
            pass


async def test_grace_period_bounds_shutdown(serve, upstream: UpstreamServer):
    served = serve(upstream.url, grace="0.5")
    async with aiohttp.ClientSession() as client:
        pending = asyncio.ensure_future(client.get(served.base + "/slow?delay=20"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(served.proc.wait, 15) == 0
        assert time.monotonic() - started < 8
        with pytest.raises(aiohttp.ClientError):
            await (await pending).read()


async def test_workers_share_one_port_and_stop_together(serve, upstream: UpstreamServer):
    served = serve(upstream.url, "--workers", "2")
    deadline = time.monotonic() + 15
    async with aiohttp.ClientSession() as client:
        while True:
            async with client.get(served.admin + "/healthz") as resp:
                health = await resp.json()
            if health.get("workers_alive") == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert resp.status == 200
        assert health == {"status": "ok", "workers": 2, "workers_alive": 2}
        workers = _workers(served.proc.pid)
        assert len(workers) == 2
        for _ in range(20):
            async with client.get(served.base + "/api/v2/version") as resp:
                assert resp.status == 200
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(20) == 0
    assert not [pid for pid in workers if _running(pid)]


def _workers(supervisor: int) -> list[int]:
    return [pid for pid in _children(supervisor) if "spawn_main" in _cmdline(pid)]


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_killed_worker_is_restarted(serve, upstream: UpstreamServer):
    served = serve(upstream.url, "--workers", "2")
    await asyncio.sleep(1.5)
    workers = _workers(served.proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            now = _workers(served.proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            await asyncio.sleep(0.2)
        assert len(now) == 2 and workers[0] not in now
        async with client.get(served.base + "/api/v2/version") as resp:
            assert resp.status == 200


async def test_workers_exit_when_the_supervisor_is_killed(serve, upstream: UpstreamServer):
    served = serve(upstream.url, "--workers", "2")
    await asyncio.sleep(1.5)
    workers = _workers(served.proc.pid)
    assert len(workers) == 2
    served.proc.kill()
    served.proc.wait(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(pid) for pid in workers):
        await asyncio.sleep(0.2)
    assert not [pid for pid in workers if _running(pid)]


async def test_admin_probes(serve, upstream: UpstreamServer):
    served = serve(upstream.url)
    async with aiohttp.ClientSession() as client:
        async with client.get(served.admin + "/healthz") as resp:
            assert resp.status == 200
        async with client.get(served.admin + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"


async def test_readyz_fails_but_healthz_holds_when_upstream_is_down(serve):
    served = serve(f"http://127.0.0.1:{free_port()}")
    async with aiohttp.ClientSession() as client:
        async with client.get(served.admin + "/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["status"] == "not ready"
            assert "unreachable" in body["upstream"]
        async with client.get(served.admin + "/healthz") as resp:
            assert resp.status == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_admin_port_in_use_is_a_clear_error(tmp_path: Path, workers: str):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin = busy.getsockname()[1]
        proc = subprocess.run(
            dagcache_cmd("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", workers),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DAGCACHE_ADMIN__HOST": "127.0.0.1", "DAGCACHE_ADMIN__PORT": str(admin)},
        )
    assert proc.returncode == 1
    assert f"admin listener on 127.0.0.1:{admin}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            dagcache_cmd("serve", "--host", "127.0.0.1", "--port", str(port)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        ("[server]\nport = 70000\n", {}, "[server] port = 70000: Input should be less than or equal to 65535"),
        ("[server]\nprot = 1\n", {}, "[server] prot = 1: unknown key; allowed keys here:"),
        ("[server\nport = 1\n", {}, "is not valid TOML"),
        ("", {"DAGCACHE_UPSTREAM__URL": "ftp://x"}, "[upstream] url = 'ftp://x': must be an http:// or https:// URL"),
        ("", {"DAGCACHE_SERVER__WORKERS": "lots"}, "[server] workers = 'lots': Input should be a valid integer"),
        ("[log]\nlevel = \"loud\"\n", {}, "Input should be 'debug', 'info', 'warning' or 'error'"),
    ],
)
def test_bad_config_exits_2_naming_key_value_and_allowed(tmp_path: Path, content: str, env: dict[str, str],
                                                         expected: str):
    config = tmp_path / "config.toml"
    config.write_text(content)
    proc = subprocess.run(
        dagcache_cmd("serve", "--config", str(config)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_secrets_never_printed(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "oracle://airflow:hunter2@db/airflow"\n[redis]\nurl = "http://:s3cret@r"\n')
    proc = subprocess.run(dagcache_cmd("check", "--config", str(config)), cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "[database] url = <redacted>" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "s3cret" not in proc.stderr + proc.stdout


def test_missing_config_file(tmp_path: Path):
    proc = subprocess.run(dagcache_cmd("serve", "--config", str(tmp_path / "nope.toml")), cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "config file not found" in proc.stderr


def test_check_accepts_the_example_config():
    proc = subprocess.run(
        [*dagcache_cmd("check", "--config", str(REPO / "config.example.toml"))],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DAGCACHE_UPSTREAM__URL": f"http://127.0.0.1:{free_port()}"},
    )
    assert proc.stdout.startswith("configuration ok")
    assert "Traceback" not in proc.stderr


async def test_check_reports_each_dependency_and_rejects_a_non_airflow_db(
    tmp_path: Path, upstream: UpstreamServer, redis_url: str, postgres_admin_url: str
):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[upstream]\nurl = "{upstream.url}"\n[redis]\nurl = "{redis_url}"\n[database]\nurl = "{postgres_admin_url}"\n'
    )
    proc = await asyncio.to_thread(
        subprocess.run, dagcache_cmd("check", "--config", str(config)), cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert lines["upstream"].split()[1] == "ok"
    assert lines["redis"].split()[1] == "ok"
    # Reachable, but the admin database holds no Airflow schema: that is a failure with the reason.
    assert lines["database"].split()[1] == "FAIL"
    assert "is not an Airflow metadata database" in lines["database"]
    assert proc.returncode == 1


def test_check_fails_with_reasons_when_dependencies_are_down(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[upstream]\nurl = "http://127.0.0.1:{free_port()}"\n'
        f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"\n'
        f'[database]\nurl = "postgresql://airflow:pw@127.0.0.1:{free_port()}/airflow"\nconnect_timeout = 2\n'
    )
    proc = subprocess.run(dagcache_cmd("check", "--config", str(config)), cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    for name in ("upstream", "redis", "database"):
        assert rows[name].split()[1] == "FAIL", rows[name]
    assert "refused" in rows["upstream"].lower() or "connect" in rows["upstream"].lower()
    assert "airflow:***@" in rows["database"]
    assert "pw@" not in proc.stdout


def test_version():
    proc = subprocess.run(dagcache_cmd("--version"), cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.startswith("dagcache ")


# -- dagcache demo: the quick stand-in mode and the checks made before any Airflow work ------------------------


def test_demo_stand_in_serves_and_stops_on_sigint(tmp_path: Path):
    port, admin = free_port(), free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dagcache_cmd("demo", "--stand-in", "--port", str(port), "--admin-port", str(admin)),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, 20)
        wait_port(admin, 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/dags?limit=3", timeout=10) as response:
            assert response.status == 200
            assert len(json.loads(response.read())["dags"]) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dagcache_cmd("demo", *args), cwd=REPO, capture_output=True, text=True, timeout=60)


def test_demo_port_in_use_is_a_clear_error_before_any_setup(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _demo("--dir", str(tmp_path / "d"), "--port", str(port), "--admin-port", str(free_port()))
    assert result.returncode == 1
    assert "choose another with --port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d" / "airflow").exists()


def test_demo_refuses_a_directory_that_is_not_its_own(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep me")
    run = _demo("--dir", str(tmp_path), "--port", str(free_port()), "--admin-port", str(free_port()))
    assert run.returncode == 1
    assert "not a dagcache demo directory" in run.stderr
    clean = _demo("--dir", str(tmp_path), "--clean")
    assert clean.returncode == 1
    assert "not removing it" in clean.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_clean_of_a_missing_directory_is_fine(tmp_path: Path):
    result = _demo("--dir", str(tmp_path / "never-made"), "--clean")
    assert result.returncode == 0
    assert "nothing to remove" in result.stdout


def test_demo_clean_refuses_while_a_demo_runs_from_the_directory(tmp_path: Path):
    from proxy.demo.workdir import locked, save_state

    save_state(tmp_path, {"airflow": "3.3.2"})
    with locked(tmp_path):  # what a running demo holds
        result = _demo("--dir", str(tmp_path), "--clean")
    assert result.returncode == 1
    assert f"a demo is running from {tmp_path} (pid {os.getpid()})" in result.stderr
    assert (tmp_path / "demo.json").exists()
    assert _demo("--dir", str(tmp_path), "--clean").returncode == 0
    assert not tmp_path.exists()

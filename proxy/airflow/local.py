"""A local Apache Airflow in a virtualenv of its own: install, environment, processes.

Airflow pins its own dependencies, so it never shares dagcache's environment.
:func:`ensure_venv` builds one venv per Airflow release (once, under a file lock, so
concurrent processes share it). :func:`airflow_env` is the environment every Airflow process
of one instance runs with; :func:`run` and :func:`spawn_server` start those processes in a
process group of their own, and :func:`stop_process_group` makes sure nothing survives.

Used by ``dagcache demo`` (:mod:`proxy.demo.airflow`) and by the test harness
(``tests/airflow/harness.py``). Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from proxy.errors import ProxyError

AIRFLOW_VERSIONS: dict[int, str] = {3: "3.3.2", 2: "2.11.2"}
"""The Airflow release installed for each major version."""

EXTRA_PACKAGES: tuple[str, ...] = ("psycopg2-binary", "asyncpg")
"""Installed beside Airflow: psycopg2 for the metadata DB; asyncpg because Airflow 3's
``db migrate`` on a ``postgresql`` URL also builds an async engine and fails without it."""

ROLES: dict[int, dict[str, str]] = {
    3: {"admin": "admin", "viewer": "viewer", "op": "op", "user": "user"},
    2: {"admin": "Admin", "viewer": "Viewer", "op": "Op", "user": "User"},
}
"""Role names per major version, by dagcache's name for them."""

MARKER = ".dagcache-installed.json"
SERVER_STOP_GRACE = 15.0
PORT_TAKEN = ("address already in use", "connection in use")

Log = Callable[[str], None]
OutputLine = Callable[[str], None]


class LocalAirflowError(ProxyError):
    """Installing, starting or driving a local Airflow failed; the message carries the relevant output."""


def log_stderr(message: str) -> None:
    print(f"[dagcache-airflow] {message}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# The virtualenv
# ---------------------------------------------------------------------------------------------


def airflow_version(major: int) -> str:
    """The release installed for ``major`` (``ValueError`` for an unsupported one)."""
    try:
        return AIRFLOW_VERSIONS[major]
    except KeyError:
        expected = sorted(AIRFLOW_VERSIONS)
        raise ValueError(f"unsupported Airflow major version {major!r}; expected one of {expected}") from None


def shared_venvs_root() -> Path:
    """``$DAGCACHE_AIRFLOW_VENVS``, by default ``~/.cache/dagcache/airflow-venvs`` (shared by the tests)."""
    root = os.environ.get("DAGCACHE_AIRFLOW_VENVS") or str(Path.home() / ".cache" / "dagcache" / "airflow-venvs")
    return Path(root).expanduser()


def venv_dir(major: int, root: Path | None = None) -> Path:
    """Where the venv for ``major`` lives: ``<root>/airflow-<version>`` (root: :func:`shared_venvs_root`)."""
    return (root if root is not None else shared_venvs_root()) / f"airflow-{airflow_version(major)}"


def airflow_bin(venv: Path) -> Path:
    """The ``airflow`` executable of a venv made by :func:`ensure_venv`."""
    return venv / "bin" / "airflow"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def requirements(major: int) -> list[str]:
    return [f"apache-airflow=={airflow_version(major)}", *EXTRA_PACKAGES]


def is_installed(venv: Path, wanted: Sequence[str]) -> bool:
    """Whether ``venv`` finished installing exactly ``wanted`` (the marker is written last)."""
    try:
        marker = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("requirements") == list(wanted)
        and airflow_bin(venv).exists()
        and venv_python(venv).exists()
    )


def ensure_venv(
    major: int,
    root: Path | None = None,
    *,
    on_output: OutputLine | None = None,
    log: Log = log_stderr,
) -> Path:
    """Return a venv with Airflow ``major`` installed under ``root``, installing it first if needed.

    Idempotent: a marker file is written only after a successful install. A ``fcntl`` lock
    next to the venv makes a second process wait for the first one's install instead of
    starting its own. The base interpreter is ``$DAGCACHE_AIRFLOW_PYTHON`` or this one.
    ``on_output`` receives each line pip prints (for a progress display); the whole output
    also goes to ``<venv>.install.log``. No constraints file is used: a plain install works.
    """
    wanted = requirements(major)
    venv = venv_dir(major, root)
    if is_installed(venv, wanted):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with open(lock_path, "w") as lock:
        if not _try_lock(lock):
            log(f"waiting for another process installing {venv.name} (lock {lock_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_installed(venv, wanted):
                return venv
            _install(venv, wanted, on_output, log)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return venv


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _install(venv: Path, wanted: Sequence[str], on_output: OutputLine | None, log: Log) -> None:
    started = time.monotonic()
    if venv.exists():
        log(f"removing incomplete venv {venv}")
        shutil.rmtree(venv)
    base_python = os.environ.get("DAGCACHE_AIRFLOW_PYTHON") or sys.executable
    log_path = venv.parent / f"{venv.name}.install.log"
    log(f"creating venv {venv} with {base_python}")
    steps: list[list[str]] = [
        [base_python, "-m", "venv", str(venv)],
        [str(venv_python(venv)), "-m", "pip", "install", "--progress-bar", "off", *wanted],
    ]
    with open(log_path, "w") as out:
        for step in steps:
            if step[1:3] == ["-m", "pip"]:
                log(f"pip install {' '.join(wanted)} (log: {log_path})")
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            returncode = _stream(step, out, on_output)
            if returncode != 0:
                out.close()
                raise LocalAirflowError(
                    f"installing {wanted[0]} into {venv} failed (exit {returncode}):\n" + tail(log_path.read_text())
                )
    version = subprocess.run(
        [str(airflow_bin(venv)), "version"], capture_output=True, text=True, env=clean_env(), check=False
    )
    if version.returncode != 0:
        raise LocalAirflowError(f"the installed airflow does not run:\n{tail(version.stdout + version.stderr)}")
    marker = {"requirements": list(wanted), "airflow_version": version.stdout.strip().splitlines()[-1]}
    (venv / MARKER).write_text(json.dumps(marker))
    log(f"installed {wanted[0]} in {time.monotonic() - started:.0f} s")


def _stream(command: list[str], out: IO[str], on_output: OutputLine | None) -> int:
    """Run ``command`` with its output appended to ``out`` line by line (and passed to ``on_output``);
    the whole process group is killed if this is interrupted."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        start_new_session=True,
    ) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                out.write(line)
                if on_output is not None:
                    on_output(line.rstrip("\n"))
            return process.wait()
        except BaseException:
            kill_group(process.pid, signal.SIGKILL)
            process.wait()
            raise


def clean_env(extra: Mapping[str, str] | None = None, venv: Path | None = None) -> dict[str, str]:
    """os.environ without anything that would leak the caller's Python or Airflow setup."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON", "_AIRFLOW"))
        and key not in ("VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
    }
    env["PYTHONUNBUFFERED"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# Configuration of one instance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """The keys every process of one instance must share (JWTs, sessions, connections)."""

    jwt_secret: str
    secret_key: str
    fernet_key: str


def passwords_file(home: Path) -> Path:
    """Airflow 3's SimpleAuthManager reads the users' passwords from this JSON file."""
    return home / "simple_auth_manager_passwords.json.generated"


def airflow_env(
    major: int,
    *,
    venv: Path,
    home: Path,
    sqlalchemy_url: str,
    dags_folder: Path,
    secrets: Secrets,
    users: Mapping[str, str],
    base_url: str = "",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every Airflow process of one instance.

    ``users`` maps user names to their role (a key of :data:`ROLES`); on Airflow 3 they are
    SimpleAuthManager users whose passwords are in :func:`passwords_file`. ``base_url`` is the
    server's own URL (Airflow 3 sends task workers' Execution API calls there).
    """
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": secrets.fernet_key,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }
    if major >= 3:
        roles = ROLES[3]
        settings |= {
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": secrets.secret_key,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{roles[role]}" for name, role in users.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        }
        if base_url:
            settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{base_url}/execution/"
    else:
        settings |= {
            "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.secret_key,
            "AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session",
            # Login is rate-limited per worker (5 per 40 s); tests log in more often than that.
            "AIRFLOW__FAB__AUTH_RATE_LIMITED": "False",
        }
    settings |= dict(extra or {})
    return clean_env(settings, venv)


def server_command(major: int, port: int, workers: int) -> list[str]:
    """The ``airflow`` arguments that serve the UI and API on 127.0.0.1:``port``."""
    if major >= 3:
        return ["api-server", "--port", str(port), "--host", "127.0.0.1", "-w", str(workers)]
    return ["webserver", "--port", str(port), "--hostname", "127.0.0.1", "-w", str(workers)]


def health_path(major: int) -> str:
    return "/api/v2/monitor/health" if major >= 3 else "/api/v1/health"


# ---------------------------------------------------------------------------------------------
# Processes: each in a process group of its own, so that nothing survives
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    command: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (output captured as text) in a new session; interrupted or timed out, its whole
    process group is killed. ``check``: a non-zero exit raises :class:`LocalAirflowError` with the output.
    ``stdin`` is written to its standard input (else stdin is empty); having no terminal, a prompt such as
    ``getpass`` reads it from there (what a secret should not be passed as: an argument, visible to ``ps``)."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except BaseException:
            kill_group(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        shown = " ".join(Path(command[0]).name.split() + command[1:])
        if len(shown) > 300:
            shown = shown[:300] + "..."
        raise LocalAirflowError(
            f"`{shown}` failed with exit {result.returncode}:\n{tail(result.stdout, 20)}\n{tail(result.stderr)}"
        )
    return result


def spawn_server(command: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own process group, output to ``log_path``.

    On Linux the child gets SIGTERM when the thread that started it dies without cleaning up."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def read_tail(path: Path, lines: int = 60) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no server log)"


def wait_until_serving(
    process: subprocess.Popen[bytes], url: str, *, log_path: Path, timeout: float, what: str = "server"
) -> None:
    """Return once ``url`` answers 200; :class:`LocalAirflowError` if the process exits, cannot bind its
    port, or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    opener = urllib.request.build_opener(_NoRedirect)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalAirflowError(f"{what} exited with {process.returncode}:\n{read_tail(log_path)}")
        recent = read_tail(log_path, 20)
        if any(marker in recent.lower() for marker in PORT_TAKEN):
            # gunicorn (Airflow 2) gives up binding, but Airflow's monitor waits 120 s more.
            raise LocalAirflowError(f"{what} could not bind its port:\n{recent}")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            error.close()
            last_error = f"HTTP {error.code}"
        except OSError as exc:
            last_error = repr(exc)
        time.sleep(0.5)
    raise LocalAirflowError(
        f"{what} did not answer {url} within {timeout:.0f} s ({last_error}):\n{read_tail(log_path)}"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM if this process dies without cleaning
    up (e.g. killed by SIGKILL); the server then shuts its workers down itself.
    Linux only, and only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that
    forked the child exits."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_pids(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # Fields after the parenthesised command: state ppid pgrp ...
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def stop_process_group(
    process: subprocess.Popen[bytes], *, grace: float = SERVER_STOP_GRACE, log: Log = log_stderr
) -> None:
    """SIGTERM the process group led by ``process``; SIGKILL what is left after ``grace`` seconds."""
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()
        if not group_pids(pgid):
            break
        time.sleep(0.2)
    else:
        log(f"process group {pgid} still alive after {grace:.0f} s: SIGKILL")
        kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)

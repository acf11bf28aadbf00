"""The demo's Airflow: its virtualenv, metadata DB, example DAGs and runs, and the server process.

Airflow 3 (the default) or Airflow 2, as :class:`~proxy.demo.flavor.Flavor` says. What the 2.x demo changes:
the login is a FAB user made by ``airflow users create`` (Airflow 3's SimpleAuthManager reads a password
file instead), and the server is ``airflow webserver`` (gunicorn) rather than ``airflow api-server``;
:mod:`proxy.airflow.local` knows both servers' commands and environments.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.airflow import local
from proxy.airflow.examples import BIG_DAG_ID, CREATE_RUNS_SCRIPT, big_dag_task_count, generate_dags
from proxy.demo import DemoError, backends
from proxy.demo.flavor import Flavor, directory_conflict
from proxy.demo.progress import OneLine, pip_progress
from proxy.demo.workdir import instance_name, save_state

USER = "admin"
N_SMALL = 10
BIG_TASKS = 1000
RUNS: dict[str, tuple[str, ...]] = {BIG_DAG_ID: ("success", "success", "failed"), "small_000": ("success",)}
"""The runs created on the first start (no scheduler runs in the demo: they are written as one would)."""

Note = Callable[[str], None]


def new_state_defaults(state: dict[str, Any], flavor: Flavor, directory: Path) -> None:
    """Fill in what a fresh demo directory needs once: the Airflow release, the login, the secrets;
    :class:`DemoError` if ``directory`` holds another release's demo."""
    conflict = directory_conflict(directory, state, flavor)
    if conflict is not None:
        raise DemoError(conflict)
    state.setdefault("airflow", flavor.version)
    state.setdefault("password", secrets.token_urlsafe(9))
    state.setdefault(
        "secrets",
        {
            "jwt_secret": secrets.token_hex(32),
            "secret_key": secrets.token_hex(24),
            "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        },
    )
    state.setdefault("done", [])


def airflow_venv(flavor: Flavor, directory: Path, say: Note) -> tuple[Path, str]:
    """The shared venv when Airflow is already installed there (as the tests leave it), else one in
    ``directory/venvs``, installed now with pip's progress on one line."""
    wanted = local.requirements(flavor.major)
    shared = local.venv_dir(flavor.major)
    if local.is_installed(shared, wanted):
        return shared, f"reusing {shared}"
    own = local.venv_dir(flavor.major, directory / "venvs")
    if local.is_installed(own, wanted):
        return own, f"installed in {own}"
    say("first run: installing apache-airflow and its dependencies; this takes a few minutes")
    display = OneLine(sys.stderr, prefix="      pip: ", interval=15.0)
    try:
        venv = local.ensure_venv(flavor.major, directory / "venvs", on_output=pip_progress(display), log=display.show)
    except local.LocalAirflowError as exc:
        display.done()
        log = own.parent / f"{own.name}.install.log"
        raise DemoError(f"{str(exc).splitlines()[0]} (full output: {log})") from None
    display.done()
    return venv, f"installed {' '.join(wanted)} in {venv}"


def choose_database(
    directory: Path, state: dict[str, Any], *, postgres: str, sqlite: bool, home: Path
) -> tuple[str, str, str]:
    """(dagcache's URL, a note for the user, Airflow's SQLAlchemy URL), recorded in ``state``: the
    PostgreSQL database of the first run, else a new one when ``postgres`` answers, else SQLite."""
    chosen = state.get("database")
    name = instance_name(directory)
    if chosen is None or chosen.get("kind") == "postgresql":
        admin_url = chosen["admin_url"] if chosen else postgres
        if chosen is None and sqlite:
            probe = backends.Probe(None, "--sqlite given")
        else:
            probe = asyncio.run(backends.ensure_postgres_database(admin_url, name))
        if probe.url is not None:
            state["database"] = {"kind": "postgresql", "admin_url": admin_url, "name": name}
            note = f"PostgreSQL database {name} ({backends.display_url(probe.url)})"
            return probe.url, note, backends.with_database(probe.url, name, driver="psycopg2")
        if chosen is not None:
            raise DemoError(
                f"this demo's metadata DB is PostgreSQL database {name} at {backends.display_url(admin_url)}, "
                f"which does not answer ({probe.reason}); start it, or start over with --clean"
            )
        reason = f"PostgreSQL not used: {probe.reason}"
    else:
        reason = "as on the first run"
    if importlib.util.find_spec("aiosqlite") is None:
        raise DemoError(f"SQLite needs aiosqlite ({reason}): pip install 'dagcache[sqlite]'")
    path = home / "airflow.db"
    state["database"] = {"kind": "sqlite", "path": str(path)}
    url = f"sqlite:///{path}"
    return url, f"SQLite {path} ({reason})", url


def airflow_env(flavor: Flavor, venv: Path, home: Path, db_url: str, state: dict[str, Any]) -> dict[str, str]:
    return local.airflow_env(
        flavor.major,
        venv=venv,
        home=home,
        sqlalchemy_url=db_url,
        dags_folder=home / "dags",
        secrets=local.Secrets(**state["secrets"]),
        users={USER: "admin"},
    )


def write_users(home: Path, password: str) -> None:
    """Airflow 3's SimpleAuthManager reads the passwords from a file (Airflow 2: :func:`create_user_command`)."""
    local.passwords_file(home).write_text(json.dumps({USER: password}))


def create_user_command(venv: Path) -> list[str]:
    """``airflow users create`` for the demo's Airflow 2 admin (FAB); the password is typed on its stdin
    (:func:`password_answers`), never an argument that ``ps`` would show."""
    return [
        str(local.airflow_bin(venv)),
        *("users", "create", "--username", USER, "--role", local.ROLES[2]["admin"]),
        *("--firstname", "Demo", "--lastname", "Admin", "--email", f"{USER}@dagcache-demo.invalid"),
    ]


def password_answers(password: str) -> str:
    """What ``airflow users create`` reads when it prompts: the password and its confirmation."""
    return f"{password}\n{password}\n"


def set_up(
    flavor: Flavor, venv: Path, home: Path, env: dict[str, str], state: dict[str, Any], directory: Path, note: Note
) -> None:
    """Users, DAG files, ``db migrate``, ``dags reserialize`` and runs: each only when not done yet (DAGs
    are serialized again when a file in ``dags/`` changed since)."""
    done: list[str] = state["done"]
    dags = home / "dags"

    def run(command: list[str], what: str, stdin: str | None = None) -> None:
        try:
            local.run(command, cwd=home, env=env, timeout=900, stdin=stdin)
        except local.LocalAirflowError as exc:
            raise DemoError(f"{what} failed:\n{exc}") from None

    def mark(step: str) -> None:
        done.append(step)
        save_state(directory, state)

    airflow = str(local.airflow_bin(venv))
    if flavor.major >= 3:
        write_users(home, state["password"])
    if "dags" not in done:
        generate_dags(dags, N_SMALL, BIG_TASKS)
        mark("dags")
        note(f"wrote {N_SMALL} small DAGs and {BIG_DAG_ID} ({big_dag_task_count(BIG_TASKS)} tasks) to {dags}")
    if "migrate" not in done:
        run([airflow, "db", "migrate"], "airflow db migrate")
        mark("migrate")
        note("airflow db migrate")
    if flavor.major < 3 and "users" not in done:
        run(create_user_command(venv), "airflow users create", password_answers(state["password"]))
        mark("users")
        note(f"airflow users create {USER} (role {local.ROLES[2]['admin']})")
    newest = max((p.stat().st_mtime for p in dags.glob("*.py")), default=0.0)
    if state.get("serialized_at", 0.0) < newest:
        run([airflow, "dags", "reserialize"], "airflow dags reserialize")
        state["serialized_at"] = time.time()
        save_state(directory, state)
        note("airflow dags reserialize")
    if "runs" not in done:
        python = str(local.venv_python(venv))
        for dag_id, states in RUNS.items():
            run([python, "-c", CREATE_RUNS_SCRIPT, dag_id, json.dumps(list(states))], f"creating runs of {dag_id}")
        mark("runs")
        note(", ".join(f"{len(s)} run{'s' if len(s) > 1 else ''} of {d}" for d, s in RUNS.items()))


def start_server(
    flavor: Flavor, venv: Path, home: Path, env: dict[str, str], *, workers: int, timeout: float, say: Note
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the api-server (3) or webserver (2) on a free port of 127.0.0.1 and wait until it answers;
    (process, URL). Interrupted or failed, nothing is left running."""
    log_path = home / flavor.log_name
    for attempt in range(3):
        port = local.free_port()
        url = f"http://127.0.0.1:{port}"
        if flavor.major >= 3:
            env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/"}
        else:
            remove_pid_files(home)
        command = [str(local.airflow_bin(venv)), *local.server_command(flavor.major, port, workers)]
        server = local.spawn_server(command, cwd=home, env=env, log_path=log_path)
        try:
            health = url + local.health_path(flavor.major)
            what = f"the Airflow {flavor.server}"
            local.wait_until_serving(server, health, log_path=log_path, timeout=timeout, what=what)
            return server, url
        except local.LocalAirflowError as exc:
            local.stop_process_group(server, log=say)
            taken = any(marker in str(exc).lower() for marker in local.PORT_TAKEN)
            if attempt == 2 or not taken:
                raise DemoError(f"{exc}\n(log: {log_path})") from None
        except BaseException:  # Ctrl-C while waiting: nothing may outlive the demo
            local.stop_process_group(server, log=say)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def remove_pid_files(home: Path) -> None:
    """Airflow 2's webserver refuses to start while its pid files name a live process, and a pid of a webserver
    that was killed may have been reused by now. The demo's lock is held, so no webserver of this directory runs."""
    for name in ("airflow-webserver.pid", "airflow-webserver-monitor.pid"):
        (home / name).unlink(missing_ok=True)

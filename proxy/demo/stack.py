"""``dagcache demo``: a real Airflow server, its metadata DB, example DAGs with runs, and dagcache in front.

Airflow 3's api-server by default; with ``--airflow 2``, Airflow 2's webserver with 4 gunicorn workers
(:mod:`proxy.demo.flavor`). Everything lives under one directory (``~/.cache/dagcache/demo`` by default,
``~/.cache/dagcache/demo-airflow2`` for Airflow 2)::

    demo.json        what was set up already (so a restart skips it), the login and the secrets
    demo.lock        held while a demo runs from this directory (its pid inside)
    dagcache.log     the proxy's JSON log
    airflow/         AIRFLOW_HOME: dags/, logs/, api-server.log or webserver.log, airflow.db when on SQLite
    venvs/           Airflow's virtualenv, unless one was already installed in the shared cache

The metadata DB is a PostgreSQL database when a server answers (created on first use), else SQLite; the
store is Redis when one answers, else the embedded in-process store. Ctrl-C (or SIGTERM) stops the proxy
and the Airflow server's whole process group and keeps the directory; ``--clean`` removes it (and the
PostgreSQL database).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from proxy.airflow import local
from proxy.airflow.examples import big_dag_task_count
from proxy.config import Settings
from proxy.demo import DemoError, airflow, backends, workdir
from proxy.demo.flavor import FLAVORS, Flavor, clean_command
from proxy.demo.serve import Endpoints, demo_settings, log_to_file, serve
from proxy.server import bind_socket
from proxy.supervisor import run_async

_STEPS = 6


@dataclass(frozen=True)
class DemoOptions:
    flavor: Flavor = FLAVORS[3]
    directory: Path = workdir.DEFAULT_DIR
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 9090
    postgres: str = backends.DEFAULT_POSTGRES
    sqlite: bool = False
    redis: str = backends.DEFAULT_REDIS
    no_redis: bool = False
    airflow_workers: int | None = None
    """``None``: the flavor's (1 api-server worker; 4 gunicorn workers for Airflow 2)."""
    startup_timeout: float = 240.0


def say(message: str) -> None:
    print(f"dagcache demo: {message}", file=sys.stderr, flush=True)


def clean_all(directories: list[Path]) -> int:
    """``dagcache demo --clean``: :func:`clean` each directory; 1 if any could not be removed (each reason is
    printed), else 0."""
    failed = False
    for directory in directories:
        try:
            clean(directory)
        except DemoError as exc:
            print(f"dagcache demo: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def clean(directory: Path) -> None:
    """Remove a demo directory (and the PostgreSQL database it created)."""
    directory = workdir.resolve_dir(directory)
    if not directory.exists():
        print(f"nothing to remove: {directory} does not exist")
        return
    if not workdir.is_demo_dir(directory):
        raise DemoError(f"{directory} is not a dagcache demo directory (no {workdir.STATE}); not removing it")
    removed = [str(directory)]
    with workdir.locked(directory):
        database = workdir.load_state(directory).get("database", {})
        if database.get("kind") == "postgresql":
            failed = asyncio.run(backends.drop_postgres_database(database["admin_url"], database["name"]))
            if failed is None:
                removed.append(f"PostgreSQL database {database['name']}")
            else:
                say(f"could not drop PostgreSQL database {database['name']}: {failed}")
        shutil.rmtree(directory)
    print("removed " + " and ".join(removed))


def run_stack(settings: Settings, options: DemoOptions) -> int:
    """``dagcache demo``: bring the stack up, serve until Ctrl-C/SIGTERM, then stop it all."""
    directory = workdir.resolve_dir(options.directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create {directory}: {exc.strerror}") from None
    if not workdir.is_demo_dir(directory):
        raise DemoError(f"{directory} is not empty and not a dagcache demo directory; choose another --dir")
    with workdir.locked(directory):
        previous = signal.signal(signal.SIGTERM, _interrupt)
        server: list[subprocess.Popen[bytes]] = []
        try:
            sock = _bind(options)
            ends = _bring_up(directory, options, server)
            log_to_file(directory / "dagcache.log")
            run_async(settings, serve(demo_settings(settings, ends), sock, ends, server[0].poll))
        except KeyboardInterrupt:
            say("interrupted")
        finally:
            signal.signal(signal.SIGTERM, _interrupt)  # a second signal must not skip this cleanup
            for process in server:
                say(f"stopping the Airflow {options.flavor.server}")
                local.stop_process_group(process, log=say)
            signal.signal(signal.SIGTERM, previous)
    say(f"stopped; {directory} is kept for a fast restart (`{clean_command(options.flavor, directory)}` removes it)")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _bind(options: DemoOptions) -> socket.socket:
    """The proxy's socket now, and a check that the admin port is free, before minutes of setup."""
    try:
        sock = bind_socket(options.host, options.port, reuse_port=False)
    except OSError as exc:
        raise DemoError(f"{exc.strerror} (choose another with --port)") from None
    try:
        bind_socket(options.host, options.admin_port, reuse_port=False).close()
    except OSError as exc:
        sock.close()
        raise DemoError(f"{exc.strerror} (choose another with --admin-port)") from None
    return sock


class _Steps:
    def __init__(self) -> None:
        self.n = 0
        self.started = time.monotonic()

    def start(self, text: str) -> None:
        self.n += 1
        self.started = time.monotonic()
        say(f"[{self.n}/{_STEPS}] {text}")

    def note(self, text: str) -> None:
        say(f"      {text} ({time.monotonic() - self.started:.0f} s)")


def _bring_up(directory: Path, options: DemoOptions, server: list[subprocess.Popen[bytes]]) -> Endpoints:
    """Steps 1-5 (the Airflow server process is appended to ``server`` as soon as it serves)."""
    flavor = options.flavor
    state = workdir.load_state(directory)
    airflow.new_state_defaults(state, flavor, directory)
    workdir.save_state(directory, state)
    home = directory / "airflow"
    home.mkdir(exist_ok=True)
    steps = _Steps()

    steps.start(f"Airflow {state['airflow']} virtualenv")
    venv, venv_note = airflow.airflow_venv(flavor, directory, steps.note)
    steps.note(venv_note)

    steps.start("metadata database")
    db_url, db_note, airflow_db_url = airflow.choose_database(
        directory, state, postgres=options.postgres, sqlite=options.sqlite, home=home
    )
    workdir.save_state(directory, state)
    steps.note(db_note)

    steps.start("Airflow metadata, example DAGs and runs")
    env = airflow.airflow_env(flavor, venv, home, airflow_db_url, state)
    airflow.set_up(flavor, venv, home, env, state, directory, steps.note)

    steps.start("store")
    redis_url, redis_note = _redis(options)
    steps.note(redis_note)

    workers = options.airflow_workers or flavor.workers
    steps.start(f"Airflow {flavor.server}" + (f" ({workers} gunicorn workers)" if flavor.major < 3 else ""))
    process, airflow_url = airflow.start_server(
        flavor, venv, home, env, workers=workers, timeout=options.startup_timeout, say=say
    )
    server.append(process)
    steps.note(f"serving on {airflow_url}")
    steps.start("dagcache")
    return Endpoints(
        host=options.host,
        port=options.port,
        admin_port=options.admin_port,
        airflow_url=airflow_url,
        airflow_pid=process.pid,
        database_url=db_url,
        redis_url=redis_url,
        key_prefix=workdir.instance_name(directory),
        summary=f"Airflow {state['airflow']}, {db_note}, {redis_note}",
        user=airflow.USER,
        password=state["password"],
        big_dag_tasks=big_dag_task_count(airflow.BIG_TASKS),
        directory=directory,
        server=flavor.server,
        big_dag_path=flavor.big_dag_path,
        profile=flavor.profile,
        clean_command=clean_command(flavor, directory),
    )


def _redis(options: DemoOptions) -> tuple[str, str]:
    if options.no_redis:
        return "", "embedded in-process store (--no-redis)"
    probe = asyncio.run(backends.probe_redis(options.redis))
    if probe.url is None:
        return "", f"embedded in-process store (Redis at {backends.display_url(options.redis)}: {probe.reason})"
    return probe.url, f"Redis {backends.display_url(probe.url)}"

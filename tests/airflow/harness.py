"""Bring up a real Apache Airflow (2.11 or 3.3, from PyPI) for integration tests.

Airflow pins its own dependencies, so it lives in a virtualenv of its own, never in the
project's: :func:`ensure_airflow_venv` builds one per Airflow version (once, under a file
lock, so concurrent pytest processes share it). :class:`AirflowInstance` then gives each
test session a fresh PostgreSQL database, a DAGs folder written by :func:`generate_dags`,
and, unless ``serve=False``, a running ``airflow api-server`` (3) or ``airflow webserver``
(2) in its own process group. ``stop()`` kills that group and drops the database.

Standard library only: the code that needs Airflow or psycopg2 runs as a small script
inside the Airflow venv (:meth:`AirflowInstance.venv_python`).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "AIRFLOW_VERSIONS",
    "BIG_DAG_ID",
    "PASSWORDS",
    "AirflowError",
    "AirflowInstance",
    "HttpResponse",
    "airflow_bin",
    "big_dag_task_count",
    "ensure_airflow_venv",
    "generate_dags",
    "small_dag_ids",
    "touch_dag_definition",
    "venv_dir",
]

AIRFLOW_VERSIONS: dict[int, str] = {3: "3.3.2", 2: "2.11.2"}
"""The Airflow release installed for each major version."""

EXTRA_PACKAGES: tuple[str, ...] = ("psycopg2-binary", "asyncpg")
"""Installed beside Airflow: psycopg2 for the metadata DB; asyncpg because Airflow 3's
``db migrate`` on a ``postgresql`` URL also builds an async engine and fails without it."""

PASSWORDS: dict[str, str] = {"admin": "admin", "viewer1": "viewer1", "op1": "op1"}
"""Users created in every instance and their passwords."""

_ROLES_3 = {"admin": "admin", "viewer1": "viewer", "op1": "op"}
_ROLES_2 = {"admin": "Admin", "viewer1": "Viewer", "op1": "Op"}
_MARKER = ".dagcache-installed.json"
_JWT_SECRET = "dagcache-test-jwt-secret-0123456789abcdef0123456789abcdef"
_SECRET_KEY = "dagcache-test-secret-key-0123456789abcdef"
_FERNET_KEY = "dGVzdC1mZXJuZXQta2V5LWRhZ2NhY2hlLTMyYnl0ZXM="  # urlsafe base64 of 32 bytes
_SERVER_STOP_GRACE = 15.0
_PORT_TAKEN = ("address already in use", "connection in use")


class AirflowError(RuntimeError):
    """Installing, starting or driving Airflow failed; the message carries the relevant output."""


def _log(message: str) -> None:
    print(f"[dagcache-airflow] {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# The Airflow virtualenv
# ---------------------------------------------------------------------------------------------


def venv_dir(major: int) -> Path:
    """Where the venv for ``major`` lives: ``$DAGCACHE_AIRFLOW_VENVS/airflow-<version>``,
    by default under ``~/.cache/dagcache/airflow-venvs``."""
    root = os.environ.get("DAGCACHE_AIRFLOW_VENVS") or str(Path.home() / ".cache" / "dagcache" / "airflow-venvs")
    return Path(root).expanduser() / f"airflow-{_version(major)}"


def _version(major: int) -> str:
    try:
        return AIRFLOW_VERSIONS[major]
    except KeyError:
        expected = sorted(AIRFLOW_VERSIONS)
        raise ValueError(f"unsupported Airflow major version {major!r}; expected one of {expected}") from None


def airflow_bin(venv: Path) -> Path:
    """The ``airflow`` executable of a venv made by :func:`ensure_airflow_venv`."""
    return venv / "bin" / "airflow"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _requirements(major: int) -> list[str]:
    return [f"apache-airflow=={_version(major)}", *EXTRA_PACKAGES]


def _installed(venv: Path, requirements: Sequence[str]) -> bool:
    try:
        marker = json.loads((venv / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("requirements") == list(requirements)
        and airflow_bin(venv).exists()
        and _venv_python(venv).exists()
    )


def ensure_airflow_venv(major: int) -> Path:
    """Return a venv with Airflow ``major`` installed, installing it first if needed.

    Idempotent: a marker file is written only after a successful install. A ``fcntl`` lock
    next to the venv makes a second process wait for the first one's install instead of
    starting its own. The base interpreter is ``$DAGCACHE_AIRFLOW_PYTHON`` or this one.
    No constraints file is used: only PyPI is reachable, and a plain install works.
    """
    requirements = _requirements(major)
    venv = venv_dir(major)
    if _installed(venv, requirements):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with open(lock_path, "w") as lock:
        if not _try_lock(lock):
            _log(f"waiting for another process installing {venv.name} (lock {lock_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _installed(venv, requirements):
                return venv
            _install(venv, requirements)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return venv


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _install(venv: Path, requirements: Sequence[str]) -> None:
    started = time.monotonic()
    if venv.exists():
        _log(f"removing incomplete venv {venv}")
        shutil.rmtree(venv)
    base_python = os.environ.get("DAGCACHE_AIRFLOW_PYTHON") or sys.executable
    log_path = venv.parent / f"{venv.name}.install.log"
    _log(f"creating venv {venv} with {base_python}")
    with open(log_path, "w") as log:
        steps: list[list[str]] = [
            [base_python, "-m", "venv", str(venv)],
            [str(_venv_python(venv)), "-m", "pip", "install", "--progress-bar", "off", *requirements],
        ]
        for step in steps:
            if step[1:3] == ["-m", "pip"]:
                _log(f"pip install {' '.join(requirements)} (log: {log_path})")
            log.write(f"$ {' '.join(step)}\n")
            log.flush()
            env = _clean_env()
            result = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
            if result.returncode != 0:
                log.close()
                raise AirflowError(
                    f"installing {requirements[0]} into {venv} failed (exit {result.returncode}):\n"
                    + _tail(log_path.read_text())
                )
    version = subprocess.run(
        [str(airflow_bin(venv)), "version"], capture_output=True, text=True, env=_clean_env(), check=False
    )
    if version.returncode != 0:
        raise AirflowError(f"the installed airflow does not run:\n{_tail(version.stdout + version.stderr)}")
    marker = {"requirements": list(requirements), "airflow_version": version.stdout.strip().splitlines()[-1]}
    (venv / _MARKER).write_text(json.dumps(marker))
    _log(f"installed {requirements[0]} in {time.monotonic() - started:.0f} s")


def _clean_env(extra: Mapping[str, str] | None = None, venv: Path | None = None) -> dict[str, str]:
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
# DAG files
# ---------------------------------------------------------------------------------------------

_IMPORTS = """\
from __future__ import annotations

import datetime

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TaskGroup, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.operators.bash import BashOperator
    from airflow.operators.empty import EmptyOperator
    from airflow.utils.task_group import TaskGroup
"""

_SMALL_DAG = """\
# Generated by dagcache tests/airflow/harness.py: small DAG {dag_id!r}, variant {variant}.{comment}
{imports}

with DAG(
    dag_id={dag_id!r},
    description="dagcache test DAG {index}",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags={tags!r},
    default_args={{"owner": "team_{team}"}},
):
    start = EmptyOperator(task_id="start")
    extract_a = BashOperator(task_id="extract_a", bash_command="echo extract a")
    extract_b = BashOperator(task_id="extract_b", bash_command="echo extract b")
    transform = EmptyOperator(task_id="transform")
    load = BashOperator(task_id="load", bash_command="echo load")
    end = EmptyOperator(task_id="end")
    start >> [extract_a, extract_b] >> transform >> load >> end
    for k in range({variant}):
        load >> EmptyOperator(task_id=f"extra_{{k}}") >> end
"""

_BIG_DAG = """\
# Generated by dagcache tests/airflow/harness.py: {groups} task groups x {tables} tables x 4 tasks,
# a fan-in check per group, a final fan-in and one mapped task.
{imports}

with DAG(
    dag_id="big_dag",
    description="dagcache test DAG with about {total} tasks",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["big", "warehouse"],
    default_args={{"owner": "warehouse"}},
):
    start = EmptyOperator(task_id="start")
    final_check = EmptyOperator(task_id="final_check")

    @task
    def process_partition(part: int) -> int:
        return part

    for g in range({groups}):
        with TaskGroup(group_id=f"group_{{g:02d}}") as group:
            check = EmptyOperator(task_id="check")
            for t in range({tables}):
                extract = EmptyOperator(task_id=f"extract_table_{{t:03d}}")
                transform = EmptyOperator(task_id=f"transform_table_{{t:03d}}")
                validate = EmptyOperator(task_id=f"validate_table_{{t:03d}}")
                load = EmptyOperator(task_id=f"load_table_{{t:03d}}")
                extract >> transform >> validate >> load >> check
        start >> group >> final_check

    final_check >> process_partition.expand(part=[0, 1, 2, 3])
"""

BIG_DAG_ID = "big_dag"
_BIG_GROUPS = 8


def small_dag_ids(n_small: int) -> list[str]:
    """The ids :func:`generate_dags` gives its small DAGs."""
    return [f"small_{i:03d}" for i in range(n_small)]


def _small_source(dag_id: str, variant: int, comment: str) -> str:
    match = re.fullmatch(r"small_(\d+)", dag_id)
    if match is None:
        raise ValueError(f"{dag_id!r} is not a small DAG made by generate_dags")
    index = int(match.group(1))
    return _SMALL_DAG.format(
        dag_id=dag_id,
        variant=variant,
        comment=f"\n# {comment}" if comment else "",
        imports=_IMPORTS,
        index=index,
        tags=["small", f"team_{index % 3}"],
        team=index % 3,
    )


def big_dag_task_count(big_tasks: int) -> int:
    """How many tasks ``big_dag`` gets when :func:`generate_dags` is asked for ``big_tasks``
    (the mapped task counts once)."""
    return _BIG_GROUPS * (4 * _big_tables(big_tasks) + 1) + 3


def _big_tables(big_tasks: int) -> int:
    return max(1, round((big_tasks - 3 - _BIG_GROUPS) / (4 * _BIG_GROUPS)))


def generate_dags(folder: Path, n_small: int = 10, big_tasks: int = 1000) -> list[str]:
    """Write ``n_small`` DAGs of 6 tasks (``small_000``...) and ``big_dag`` into ``folder``.

    ``big_dag`` has 8 task groups of ``extract >> transform >> validate >> load`` chains, one
    per table, fanning in to a ``check`` per group, then a ``final_check`` and a mapped
    ``process_partition`` (4 map indexes): about ``big_tasks`` tasks in all (0: no big DAG).
    Every DAG has ``schedule=None``, so nothing runs by itself. Returns the DAG ids.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dag_ids = small_dag_ids(n_small)
    for dag_id in dag_ids:
        (folder / f"{dag_id}.py").write_text(_small_source(dag_id, 0, ""))
    if big_tasks > 0:
        tables = _big_tables(big_tasks)
        source = _BIG_DAG.format(
            imports=_IMPORTS, groups=_BIG_GROUPS, tables=tables, total=big_dag_task_count(big_tasks)
        )
        (folder / f"{BIG_DAG_ID}.py").write_text(source)
        dag_ids.append(BIG_DAG_ID)
    return dag_ids


def touch_dag_definition(folder: Path, dag_id: str, variant: int, *, comment: str = "") -> Path:
    """Rewrite a small DAG's file: ``variant`` extra tasks ``extra_<k>`` between ``load`` and
    ``end`` (0 restores the original definition). ``comment`` only adds a comment line, so the
    same ``variant`` with another ``comment`` changes the source but not the definition.
    The change reaches Airflow's DB on the next parse (e.g. ``airflow dags reserialize``)."""
    path = folder / f"{dag_id}.py"
    if not path.exists():
        raise FileNotFoundError(path)
    path.write_text(_small_source(dag_id, variant, comment))
    return path


# ---------------------------------------------------------------------------------------------
# Scripts run inside the Airflow venv
# ---------------------------------------------------------------------------------------------

_ADMIN_SQL_SCRIPT = """\
import sys
import psycopg2

conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
with conn.cursor() as cur:
    if sys.argv[2] == "create":
        cur.execute('CREATE DATABASE "%s"' % sys.argv[3])
    else:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (sys.argv[3],),
        )
        cur.execute('DROP DATABASE IF EXISTS "%s"' % sys.argv[3])
conn.close()
"""

# Creates runs the way a manual trigger does (trigger_dag: a dag_run and all its task instances,
# mapped ones expanded), then moves them to a final state with plain SQL, as a scheduler would
# have left them. Prints the run ids as JSON.
_CREATE_RUNS_SCRIPT = """\
import datetime, json, sys

from sqlalchemy import text

import airflow
from airflow.api.common.trigger_dag import trigger_dag
from airflow.utils.session import create_session

dag_id, states = sys.argv[1], json.loads(sys.argv[2])
major = int(airflow.__version__.split(".")[0])
now = datetime.datetime.now(datetime.timezone.utc)
run_ids = []
with create_session() as session:
    for k, state in enumerate(states):
        logical_date = now - datetime.timedelta(minutes=10 * (len(states) - k))
        run_id = "dagcache__" + logical_date.strftime("%Y%m%dT%H%M%S.%f")
        if major >= 3:
            from airflow.utils.types import DagRunTriggeredByType

            trigger_dag(
                dag_id, triggered_by=DagRunTriggeredByType.TEST, run_id=run_id, logical_date=logical_date,
                run_after=logical_date, replace_microseconds=False, session=session,
            )
        else:
            trigger_dag(dag_id, run_id=run_id, execution_date=logical_date, replace_microseconds=False,
                        session=session)
        session.flush()
        start = logical_date + datetime.timedelta(seconds=5)
        end = start + datetime.timedelta(minutes=3)
        key = {"dag_id": dag_id, "run_id": run_id}
        if state == "queued":
            run_ids.append(run_id)
            continue
        ti_ids = [r[0] for r in session.execute(text(
            "SELECT task_id || ':' || map_index FROM task_instance WHERE dag_id = :dag_id AND run_id = :run_id"
            " ORDER BY task_id, map_index"), key)]
        if state == "success":
            final = {t: "success" for t in ti_ids}
        elif state == "failed":
            final = {t: "success" for t in ti_ids}
            final[ti_ids[-1]] = "failed"
        elif state == "running":
            half = len(ti_ids) // 2
            final = {t: "success" for t in ti_ids[:half]}
            final[ti_ids[half]] = "running"
        else:
            raise SystemExit("unknown run state %r" % state)
        for ti_state in sorted(set(final.values())):
            chosen = [t for t, s in final.items() if s == ti_state]
            session.execute(text(
                "UPDATE task_instance SET state = :state, start_date = :start, queued_dttm = :start,"
                " end_date = :end, duration = :duration, try_number = 1, hostname = 'dagcache-test',"
                " updated_at = now() WHERE dag_id = :dag_id AND run_id = :run_id"
                " AND task_id || ':' || map_index = ANY(:ids)"),
                {**key, "state": ti_state, "start": start, "ids": chosen,
                 "end": None if ti_state == "running" else end,
                 "duration": None if ti_state == "running" else 180.0})
        session.execute(text(
            "UPDATE dag_run SET state = :state, start_date = :start, end_date = :end, updated_at = now()"
            " WHERE dag_id = :dag_id AND run_id = :run_id"),
            {**key, "state": state, "start": start, "end": None if state == "running" else end})
        run_ids.append(run_id)
print(json.dumps(run_ids))
"""

# `airflow sync-perm` (the Viewer and Op roles exist only after it) and `airflow users create`
# for each user, in one process: each CLI call builds the whole Flask app (~5 s), and
# `airflow users import` takes no passwords.
_CREATE_USERS_2_SCRIPT = """\
import json, sys

from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

with get_application_builder() as appbuilder:
    appbuilder.add_permissions(update_perms=True)
    appbuilder.sm.sync_roles()
    for user in json.loads(sys.argv[1]):
        role = appbuilder.sm.find_role(user["role"])
        if role is None:
            raise SystemExit("no role %r" % user["role"])
        if appbuilder.sm.find_user(user["username"]) is None:
            name = user["username"]
            if not appbuilder.sm.add_user(name, name, "Test", name + "@example.com", role, user["password"]):
                raise SystemExit("could not create user %r" % name)
"""

# Parses the given files and writes them to the DB the way Airflow 2's DAG processor does
# (`airflow dags reserialize` in Airflow 2 first deletes every serialized DAG).
_SYNC_DAGS_2_SCRIPT = """\
import sys

from airflow.models.dagbag import DagBag

for path in sys.argv[1:]:
    bag = DagBag(dag_folder=path, include_examples=False)
    if bag.import_errors:
        raise SystemExit("import errors: %r" % bag.import_errors)
    bag.sync_to_db()
"""


# ---------------------------------------------------------------------------------------------
# A running Airflow
# ---------------------------------------------------------------------------------------------


class HttpResponse:
    """A minimal HTTP response: status, headers (last value wins) and body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self.body = body

    def json(self) -> object:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {len(self.body)} bytes>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


class AirflowInstance:
    """One real Airflow on a fresh PostgreSQL database, as a context manager or with ``start()``/``stop()``.

    ``start()`` installs the venv if needed, creates the database ``dagcache_af<major>_<random>``
    on the server of ``admin_db_url``, writes the DAGs (:func:`generate_dags`) into
    ``home/dags``, runs ``airflow db migrate`` and ``airflow dags reserialize``, creates the
    users of :data:`PASSWORDS`, and, if ``serve``, starts ``airflow api-server`` (3) or
    ``airflow webserver`` (2) on a free port of 127.0.0.1 and waits until it answers.
    ``stop()`` kills the server's process group and drops the database; it is safe to call
    more than once and after a failed ``start()`` (which calls it itself).

    Roles: ``admin`` is Admin, ``viewer1`` Viewer, ``op1`` Op. Airflow 2's API takes Basic auth
    and its UI a ``session`` cookie (:meth:`session_cookie`); Airflow 3 takes a Bearer JWT
    (:meth:`token`) or the same JWT as the ``_token`` cookie.

    ``min_serialized_dag_update_interval`` sets ``[core] min_serialized_dag_update_interval``.
    Airflow's default is 30 s: a DAG serialized less than 30 s ago is silently *not* rewritten
    by :meth:`sync_dags`, so tests that change definitions should pass 0 (it also feeds Airflow
    3.3's per-process ``DBDagBag`` revalidation interval, from source).
    ``extra_env`` adds or overrides ``AIRFLOW__...`` settings.
    """

    def __init__(
        self,
        major: int,
        admin_db_url: str,
        home: Path,
        *,
        workers: int = 2,
        serve: bool = True,
        n_small: int = 10,
        big_tasks: int = 1000,
        min_serialized_dag_update_interval: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        _version(major)
        self.major = major
        self.version = AIRFLOW_VERSIONS[major]
        self.admin_db_url = admin_db_url
        self.home = Path(home)
        self.workers = workers
        self.serve = serve
        self.n_small = n_small
        self.big_tasks = big_tasks
        self.startup_timeout = startup_timeout
        self.passwords: dict[str, str] = dict(PASSWORDS)
        self.db_name = f"dagcache_af{major}_{os.getpid()}_{secrets.token_hex(4)}"
        self.db_url = _with_database(admin_db_url, self.db_name)
        self.dags_folder = self.home / "dags"
        self.log_path = self.home / ("api-server.log" if major >= 3 else "webserver.log")
        self.port = _free_port() if serve else 0
        self.base_url = f"http://127.0.0.1:{self.port}" if serve else ""
        self.dag_ids: list[str] = []
        self.venv = venv_dir(major)
        self.timings: dict[str, float] = {}
        self._extra_env = dict(extra_env or {})
        if min_serialized_dag_update_interval is not None:
            interval = str(min_serialized_dag_update_interval)
            self._extra_env["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] = interval
        self._process: subprocess.Popen[bytes] | None = None
        self._db_created = False
        self._tokens: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        state = "serving" if self._process is not None else ("db" if self._db_created else "stopped")
        return f"<AirflowInstance {self.version} {state} {self.base_url or self.db_name}>"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> AirflowInstance:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> AirflowInstance:
        started = time.monotonic()
        try:
            self.venv = ensure_airflow_venv(self.major)
            self.timings["venv"] = time.monotonic() - started
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        _log(f"{self!r} ready in {self.timings['start']:.1f} s ({self._timings_text()})")
        return self

    def _timings_text(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())

    def _start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with self._timed("createdb"):
            self._admin_sql("create")
            self._db_created = True
            _register(self)
        self.dag_ids = generate_dags(self.dags_folder, self.n_small, self.big_tasks)
        if self.major >= 3:
            passwords_file = self.home / "simple_auth_manager_passwords.json.generated"
            passwords_file.write_text(json.dumps(self.passwords))
        with self._timed("db migrate"):
            self.airflow("db", "migrate")
        with self._timed("reserialize"):
            self.airflow("dags", "reserialize")
        if self.major < 3:
            with self._timed("users"):
                self._create_users_2()
        if self.serve:
            with self._timed("serve"):
                self._start_server()

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        _log(f"{self.version}: {name} ...")
        yield
        self.timings[name] = time.monotonic() - started

    def _create_users_2(self) -> None:
        users = [
            {"username": name, "password": password, "role": _ROLES_2[name]}
            for name, password in self.passwords.items()
        ]
        self.venv_python("-c", _CREATE_USERS_2_SCRIPT, json.dumps(users))

    def _start_server(self) -> None:
        for attempt in range(3):
            try:
                self._spawn_server()
                return
            except AirflowError as exc:
                if attempt == 2 or not any(marker in str(exc).lower() for marker in _PORT_TAKEN):
                    raise
                _log(f"port {self.port} was taken: retrying on another")
                self.port = _free_port()
                self.base_url = f"http://127.0.0.1:{self.port}"

    def _spawn_server(self) -> None:
        if self.major >= 3:
            command = ["api-server", "--port", str(self.port), "--host", "127.0.0.1", "-w", str(self.workers)]
        else:
            command = ["webserver", "--port", str(self.port), "--hostname", "127.0.0.1", "-w", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(airflow_bin(self.venv)), *command],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        try:
            self._wait_until_serving()
        except BaseException:
            process, self._process = self._process, None
            _stop_process_group(process)
            raise

    def _wait_until_serving(self) -> None:
        health = "/api/v2/monitor/health" if self.major >= 3 else "/api/v1/health"
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AirflowError(f"{self.version} server exited with {self._process.returncode}:\n{self.log_tail()}")
            tail = self.log_tail(20)
            if any(marker in tail.lower() for marker in _PORT_TAKEN):
                # gunicorn (Airflow 2) gives up binding, but Airflow's monitor waits 120 s more.
                raise AirflowError(f"{self.version} server could not bind port {self.port}:\n{tail}")
            try:
                response = self.request("GET", health, timeout=5)
            except OSError as exc:
                last_error = repr(exc)
            else:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}: {response.body[:200]!r}"
            time.sleep(0.5)
        raise AirflowError(
            f"{self.version} server did not answer {health} within {self.startup_timeout:.0f} s"
            f" ({last_error}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server's log."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Kill the server's process group (SIGTERM, SIGKILL after 15 s) and drop the database."""
        process, self._process = self._process, None
        if process is not None:
            _stop_process_group(process)
        _unregister(self)
        if self._db_created:
            self._db_created = False
            try:
                self._admin_sql("drop")
            except AirflowError as exc:
                _log(f"could not drop database {self.db_name}: {exc}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def server_pids(self) -> list[int]:
        """The pids of the server's process group (the CLI process and its workers)."""
        if self._process is None:
            return []
        return _group_pids(self._process.pid)

    def rss_bytes(self) -> int:
        """Resident memory of the server's whole process group, in bytes."""
        total = 0
        for pid in self.server_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    # -- environment and CLI -----------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        """The URL Airflow itself uses (``postgresql+psycopg2://...``)."""
        return self.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)

    @property
    def env(self) -> dict[str, str]:
        """The environment every Airflow process of this instance runs with."""
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sqlalchemy_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": _FERNET_KEY,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
        }
        if self.major >= 3:
            settings |= {
                "AIRFLOW__API_AUTH__JWT_SECRET": _JWT_SECRET,
                "AIRFLOW__API__SECRET_KEY": _SECRET_KEY,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{name}:{_ROLES_3[name]}" for name in self.passwords
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                    self.home / "simple_auth_manager_passwords.json.generated"
                ),
            }
            if self.serve:
                settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.base_url}/execution/"
        else:
            settings |= {
                "AIRFLOW__WEBSERVER__SECRET_KEY": _SECRET_KEY,
                "AIRFLOW__API__AUTH_BACKENDS": ("airflow.api.auth.backend.basic_auth,airflow.api.auth.backend.session"),
                # Login is rate-limited per worker (5 per 40 s); tests log in more often than that.
                "AIRFLOW__FAB__AUTH_RATE_LIMITED": "False",
            }
        settings |= self._extra_env
        return _clean_env(settings, self.venv)

    def airflow(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI with this instance's environment (output captured as text)."""
        return self._run([str(airflow_bin(self.venv)), *args], check=check, timeout=timeout)

    def venv_python(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run the Airflow venv's python with this instance's environment, e.g. ``("-c", code)``."""
        return self._run([str(_venv_python(self.venv)), *args], check=check, timeout=timeout)

    def _run(self, command: list[str], *, check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
        # start_new_session + killing the group on timeout: nothing the command forks survives it.
        with subprocess.Popen(
            command,
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except BaseException:
                _kill_group(process.pid, signal.SIGKILL)
                process.communicate()
                raise
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            shown = " ".join(Path(command[0]).name.split() + command[1:])
            if len(shown) > 300:
                shown = shown[:300] + "..."
            raise AirflowError(
                f"`{shown}` failed with exit {result.returncode}:\n{_tail(result.stdout, 20)}\n{_tail(result.stderr)}"
            )
        return result

    def _admin_sql(self, action: str) -> None:
        command = [str(_venv_python(self.venv)), "-c", _ADMIN_SQL_SCRIPT, self.admin_db_url, action, self.db_name]
        result = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), timeout=120, check=False)
        if result.returncode != 0:
            raise AirflowError(f"{action} database {self.db_name} failed:\n{_tail(result.stderr)}")

    # -- DAGs and runs -------------------------------------------------------------------------

    def touch_dag(self, dag_id: str, variant: int, *, comment: str = "") -> Path:
        """:func:`touch_dag_definition` in this instance's DAGs folder (then call :meth:`sync_dags`)."""
        return touch_dag_definition(self.dags_folder, dag_id, variant, comment=comment)

    def sync_dags(self, *dag_ids: str) -> None:
        """Parse DAG files and write them to the DB, as the DAG processor would.

        Airflow 3: ``airflow dags reserialize`` (the whole folder; only changed DAGs change).
        Airflow 2: ``DagBag(file).sync_to_db()`` for the given DAGs' files (all if none given),
        because Airflow 2's ``dags reserialize`` first deletes every serialized DAG.
        A DAG written less than ``min_serialized_dag_update_interval`` ago is not rewritten.
        """
        if self.major >= 3:
            self.airflow("dags", "reserialize")
            return
        files = [str(self.dags_folder / f"{dag_id}.py") for dag_id in (dag_ids or tuple(self.dag_ids))]
        self.venv_python("-c", _SYNC_DAGS_2_SCRIPT, *files)

    def create_runs(self, dag_id: str, states: Sequence[str] = ("success",)) -> list[str]:
        """Create one finished (or running) run per entry of ``states`` and return their run ids.

        Each run is triggered as a manual run (``trigger_dag``: the ``dag_run`` row and every
        task instance, mapped ones expanded), then moved by SQL to the state the scheduler
        would have left: ``success`` (every TI success), ``failed`` (the last TI failed, the
        rest success), ``running`` (half success, one running, the rest without state) or
        ``queued`` (as triggered). Logical dates are 10 minutes apart, ending now.
        No task actually executes, so it is cheap: one Python process (~5-10 s import and
        setup) plus about a second per big-DAG run. :meth:`dags_test` really executes a DAG.
        """
        result = self.venv_python("-c", _CREATE_RUNS_SCRIPT, dag_id, json.dumps(list(states)))
        run_ids: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
        return run_ids

    def dags_test(self, dag_id: str) -> subprocess.CompletedProcess[str]:
        """``airflow dags test <dag_id>``: executes the whole DAG in-process and leaves a finished
        run with its task instances (~8 s for a small DAG; far too slow for ``big_dag``)."""
        return self.airflow("dags", "test", dag_id)

    # -- HTTP --------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        user: str | None = None,
        timeout: float = 60.0,
    ) -> HttpResponse:
        """One HTTP request to the server (redirects are not followed). ``user`` adds
        :meth:`auth_headers` for that user. Error statuses are returned, not raised."""
        if not self.base_url:
            raise AirflowError(f"{self!r} has no server (serve=False)")
        all_headers = dict(headers or {})
        if user is not None:
            all_headers.update(self.auth_headers(user))
        req = urllib.request.Request(self.base_url + path, data=body, headers=all_headers, method=method)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=timeout) as response:
                return HttpResponse(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpResponse(error.code, dict(error.headers.items()), error.read())

    def get_json(self, path: str, *, user: str = "admin") -> object:
        """GET ``path`` as ``user``; raises :class:`AirflowError` unless the answer is 200."""
        response = self.request("GET", path, user=user)
        if response.status != 200:
            raise AirflowError(f"GET {path} -> {response.status}: {response.body[:500]!r}")
        return response.json()

    def auth_headers(self, username: str) -> dict[str, str]:
        """Headers that authenticate ``username`` on the REST API: Bearer (3) or Basic (2)."""
        if self.major >= 3:
            return {"Authorization": f"Bearer {self.token(username)}"}
        credentials = f"{username}:{self.passwords[username]}".encode()
        return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}

    def token(self, username: str, password: str | None = None, *, fresh: bool = False) -> str:
        """Airflow 3: a JWT from ``POST /auth/token`` (cached per user and password unless ``fresh``: a test
        that revokes its token must not revoke everyone else's)."""
        if self.major < 3:
            raise AirflowError("Airflow 2 has no /auth/token: use auth_headers() or session_cookie()")
        password = self.passwords[username] if password is None else password
        key = (username, password)
        if fresh:
            self._tokens.pop(key, None)
        if key not in self._tokens:
            body = json.dumps({"username": username, "password": password}).encode()
            response = self.request("POST", "/auth/token", headers={"Content-Type": "application/json"}, body=body)
            if response.status not in (200, 201):
                raise AirflowError(f"POST /auth/token for {username} -> {response.status}: {response.body[:300]!r}")
            payload = response.json()
            assert isinstance(payload, dict)
            self._tokens[key] = str(payload["access_token"])
        token = self._tokens[key]
        if fresh:
            del self._tokens[key]
        return token

    def session_cookie(self, username: str, password: str | None = None) -> str:
        """A ``Cookie`` header value for the UI: ``session=...`` (2, by logging in through
        ``/login/``) or ``_token=<JWT>`` (3). Each call logs in anew."""
        password = self.passwords[username] if password is None else password
        if self.major >= 3:
            self._tokens.pop((username, password), None)
            return f"_token={self.token(username, password)}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
        with opener.open(self.base_url + "/login/", timeout=60) as response:
            page = response.read().decode()
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        if match is None:
            raise AirflowError("no csrf_token in /login/")
        form = urllib.parse.urlencode({"csrf_token": match.group(1), "username": username, "password": password})
        try:
            opener.open(self.base_url + "/login/", data=form.encode(), timeout=60).close()
        except urllib.error.HTTPError as error:
            error.close()
            if error.code != 302:
                raise AirflowError(f"POST /login/ for {username} -> {error.code}") from error
        for cookie in jar:
            if cookie.name == "session" and cookie.value:
                return f"session={cookie.value}"
        raise AirflowError(f"login of {username} gave no session cookie")


# ---------------------------------------------------------------------------------------------
# Process groups: nothing survives a test session
# ---------------------------------------------------------------------------------------------

_LIVE: dict[int, AirflowInstance] = {}


def _register(instance: AirflowInstance) -> None:
    if not _LIVE:
        import atexit

        atexit.register(_stop_all)
    _LIVE[id(instance)] = instance


def _unregister(instance: AirflowInstance) -> None:
    _LIVE.pop(id(instance), None)


def _stop_all() -> None:
    for instance in list(_LIVE.values()):
        instance.stop()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM if this process dies without cleaning
    up (e.g. pytest killed by SIGKILL); the server then shuts its workers down itself.
    Linux only, and only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that
    forked the child exits."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_pids(pgid: int) -> list[int]:
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


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + _SERVER_STOP_GRACE
    while time.monotonic() < deadline:
        process.poll()
        if not _group_pids(pgid):
            break
        time.sleep(0.2)
    else:
        _log(f"process group {pgid} still alive after {_SERVER_STOP_GRACE:.0f} s: SIGKILL")
        _kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)

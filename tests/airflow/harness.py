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
import http.cookiejar
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from proxy.airflow import local
from proxy.airflow.examples import (
    BIG_DAG_ID,
    CREATE_RUNS_SCRIPT,
    big_dag_task_count,
    generate_dags,
    small_dag_ids,
    touch_dag_definition,
)

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

AIRFLOW_VERSIONS = local.AIRFLOW_VERSIONS
"""The Airflow release installed for each major version."""

EXTRA_PACKAGES = local.EXTRA_PACKAGES
"""Installed beside Airflow (see :data:`proxy.airflow.local.EXTRA_PACKAGES`)."""

PASSWORDS: dict[str, str] = {"admin": "admin", "viewer1": "viewer1", "op1": "op1"}
"""Users created in every instance and their passwords."""

_ROLES = {"admin": "admin", "viewer1": "viewer", "op1": "op"}
_ROLES_2 = {"admin": "Admin", "viewer1": "Viewer", "op1": "Op"}
_JWT_SECRET = "dagcache-test-jwt-secret-0123456789abcdef0123456789abcdef"
_SECRET_KEY = "dagcache-test-secret-key-0123456789abcdef"
_FERNET_KEY = "dGVzdC1mZXJuZXQta2V5LWRhZ2NhY2hlLTMyYnl0ZXM="  # urlsafe base64 of 32 bytes
_SECRETS = local.Secrets(jwt_secret=_JWT_SECRET, secret_key=_SECRET_KEY, fernet_key=_FERNET_KEY)
_PORT_TAKEN = local.PORT_TAKEN


class AirflowError(RuntimeError):
    """Installing, starting or driving Airflow failed; the message carries the relevant output."""


def _log(message: str) -> None:
    print(f"[dagcache-airflow] {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 60) -> str:
    return local.tail(text, lines)


# ---------------------------------------------------------------------------------------------
# The Airflow virtualenv (proxy.airflow.local, shared with `dagcache demo`)
# ---------------------------------------------------------------------------------------------


def venv_dir(major: int) -> Path:
    """Where the venv for ``major`` lives: ``$DAGCACHE_AIRFLOW_VENVS/airflow-<version>``,
    by default under ``~/.cache/dagcache/airflow-venvs``."""
    return local.venv_dir(major)


def _version(major: int) -> str:
    return local.airflow_version(major)


def airflow_bin(venv: Path) -> Path:
    """The ``airflow`` executable of a venv made by :func:`ensure_airflow_venv`."""
    return local.airflow_bin(venv)


def ensure_airflow_venv(major: int) -> Path:
    """Return a venv with Airflow ``major`` installed, installing it first if needed.

    Idempotent: a marker file is written only after a successful install. A ``fcntl`` lock
    next to the venv makes a second process wait for the first one's install instead of
    starting its own. The base interpreter is ``$DAGCACHE_AIRFLOW_PYTHON`` or this one.
    No constraints file is used: only PyPI is reachable, and a plain install works.
    """
    try:
        return local.ensure_venv(major, log=_log)
    except local.LocalAirflowError as exc:
        raise AirflowError(str(exc)) from exc


def _clean_env(extra: Mapping[str, str] | None = None, venv: Path | None = None) -> dict[str, str]:
    """os.environ without anything that would leak the caller's Python or Airflow setup."""
    return local.clean_env(extra, venv)


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
    return local.free_port()


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
            local.passwords_file(self.home).write_text(json.dumps(self.passwords))
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
        command = local.server_command(self.major, self.port, self.workers)
        self._process = local.spawn_server(
            [str(airflow_bin(self.venv)), *command], cwd=self.home, env=self.env, log_path=self.log_path
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
        return local.airflow_env(
            self.major,
            venv=self.venv,
            home=self.home,
            sqlalchemy_url=self.sqlalchemy_url,
            dags_folder=self.dags_folder,
            secrets=_SECRETS,
            users={name: _ROLES[name] for name in self.passwords},
            base_url=self.base_url if self.major >= 3 and self.serve else "",
            extra=self._extra_env,
        )

    def airflow(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI with this instance's environment (output captured as text)."""
        return self._run([str(airflow_bin(self.venv)), *args], check=check, timeout=timeout)

    def venv_python(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run the Airflow venv's python with this instance's environment, e.g. ``("-c", code)``."""
        return self._run([str(local.venv_python(self.venv)), *args], check=check, timeout=timeout)

    def _run(self, command: list[str], *, check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
        # start_new_session + killing the group on timeout: nothing the command forks survives it.
        try:
            return local.run(command, cwd=self.home, env=self.env, timeout=timeout, check=check)
        except local.LocalAirflowError as exc:
            raise AirflowError(str(exc)) from exc

    def _admin_sql(self, action: str) -> None:
        command = [str(local.venv_python(self.venv)), "-c", _ADMIN_SQL_SCRIPT, self.admin_db_url, action, self.db_name]
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
        result = self.venv_python("-c", CREATE_RUNS_SCRIPT, dag_id, json.dumps(list(states)))
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


def _group_pids(pgid: int) -> list[int]:
    return local.group_pids(pgid)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    local.stop_process_group(process, log=_log)

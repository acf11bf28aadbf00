"""Throwaway Redis and PostgreSQL servers for the test suite.

``DAGCACHE_TEST_REDIS_URL`` / ``DAGCACHE_TEST_DATABASE_URL`` point the tests at existing servers;
without them a private ``redis-server`` / ``postgres`` is started on a free port in a temporary
directory and removed afterwards.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def _binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        for path in sorted(Path("/").glob(directory.lstrip("/"))):
            if (path / name).exists():
                return str(path / name)
    raise RuntimeError(f"{name} is not installed (the test suite starts its own {name}; .ci/run installs it)")


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: ``$DAGCACHE_TEST_REDIS_URL`` or a private ``redis-server``."""
    if os.environ.get("DAGCACHE_TEST_REDIS_URL"):
        yield os.environ["DAGCACHE_TEST_REDIS_URL"]
        return
    with RedisProcess() as server:
        yield server.url


class RedisProcess:
    """A private ``redis-server`` that a test may also stop and restart (to simulate an outage)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="dagcache-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """An admin URL ``postgresql://postgres@127.0.0.1:PORT/postgres``: the env's or a private server."""
    if os.environ.get("DAGCACHE_TEST_DATABASE_URL"):
        yield os.environ["DAGCACHE_TEST_DATABASE_URL"]
        return
    initdb = _binary("initdb", "/usr/lib/postgresql/*/bin")
    postgres = _binary("postgres", "/usr/lib/postgresql/*/bin")
    port = free_port()
    datadir = Path(tempfile.mkdtemp(prefix="dagcache-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the "postgres" system user.
        user = pwd.getpwnam("postgres")
        os.chown(datadir, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, initdb, "-D", str(datadir / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc = subprocess.Popen(
        [*run_as, postgres, "-D", str(datadir / "data"), "-p", str(port), "-k", str(datadir),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
         "-c", "shared_preload_libraries=pg_stat_statements"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        _wait_postgres_ready(port)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(datadir, ignore_errors=True)


def _wait_postgres_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-Atc", "SELECT 1"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"PostgreSQL on port {port} did not accept connections")


@contextmanager
def pgbouncer(target_url: str) -> Iterator[str]:
    """A private PgBouncer in transaction mode in front of the PostgreSQL at ``target_url``; yields the same
    URL pointed at PgBouncer (what a production Airflow behind PgBouncer looks like)."""
    from urllib.parse import urlsplit, urlunsplit

    binary = _binary("pgbouncer", "/usr/sbin")
    target = urlsplit(target_url)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="dagcache-pgbouncer-"))
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in [workdir, *workdir.iterdir()]:
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    proc = subprocess.Popen([*run_as, binary, str(workdir / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield urlunsplit((target.scheme, f"{target.username or 'postgres'}@127.0.0.1:{port}", target.path, "", ""))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _redis_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cli(port, "PING").strip() == "PONG":
            return
        time.sleep(0.05)
    raise TimeoutError(f"redis on port {port} did not answer PING")


def _cli(port: int, *args: str) -> str:
    return subprocess.run([_binary("redis-cli"), "-p", str(port), *args], capture_output=True, text=True).stdout


def _volatile(port: int, directory: Path) -> list[str]:
    """``redis-server`` arguments for a loopback-only server that persists nothing."""
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)]


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def redis_sentinel(sentinels: int = 2, service: str = "dagcache-master", replicas: int = 0) -> Iterator[str]:
    """A throwaway master (with ``replicas`` replicas, so that a failover is possible) watched by ``sentinels``
    real Sentinels; yields ``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2/<service>/0``."""
    workdir = Path(tempfile.mkdtemp(prefix="dagcache-sentinel-"))
    server = _binary("redis-server")
    master = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_spawn([server, *_volatile(master, workdir)]))
        _redis_ready(master)
        for _ in range(replicas):
            port = free_port()
            (workdir / str(port)).mkdir()  # a full sync writes dump.rdb: one directory per server
            replica_of = ["--replicaof", "127.0.0.1", str(master)]
            procs.append(_spawn([server, *_volatile(port, workdir / str(port)), *replica_of]))
            _redis_ready(port)
            _until(functools.partial(_replica_synced, port), f"replica {port}")
        ports = [free_port() for _ in range(sentinels)]
        for port in ports:
            conf = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its own file: one each, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {service} 127.0.0.1 {master} 1\n"
                f"sentinel down-after-milliseconds {service} 5000\n"
                f"sentinel failover-timeout {service} 10000\n"
            )
            procs.append(_spawn([server, str(conf), "--sentinel"]))
        for port in ports:
            _redis_ready(port)
            knows = functools.partial(_sentinel_knows, port, service, ("127.0.0.1", master), replicas)
            _until(knows, f"Sentinel on {port} to know {service}")
        yield f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in ports)}/{service}/0"
    finally:
        _stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)


def sentinel_master(sentinel_port: int, service: str) -> tuple[str, int] | None:
    """The master's address according to the Sentinel on ``sentinel_port``."""
    out = _cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", service).split()
    return (out[0], int(out[1])) if len(out) == 2 and out[1].isdigit() else None


def _replica_synced(port: int) -> bool:
    return "master_link_status:up" in _cli(port, "INFO", "replication")


def _sentinel_knows(port: int, service: str, master: tuple[str, int], replicas: int) -> bool:
    """The Sentinel knows the master and (from the master's INFO) its replicas."""
    if sentinel_master(port, service) != master:
        return False
    return _cli(port, "SENTINEL", "replicas", service).count("master-link-status") >= replicas


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """A throwaway Redis Cluster of ``masters`` masters (no replicas), slots spread by ``redis-cli --cluster
    create``; yields ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...``."""
    workdir = Path(tempfile.mkdtemp(prefix="dagcache-cluster-"))
    server = _binary("redis-server")
    ports = [free_port() for _ in range(masters)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = workdir / str(port)
            node_dir.mkdir()
            cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            cluster += ["--cluster-port", str(free_port()), "--cluster-node-timeout", "5000"]
            procs.append(_spawn([server, *_volatile(port, node_dir), *cluster]))
        for port in ports:
            _redis_ready(port)
        create = [_binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        for port in ports:
            while "cluster_state:ok" not in _cli(port, "CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster node {port} never reached cluster_state:ok")
                time.sleep(0.05)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        _stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)

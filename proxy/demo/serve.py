"""The demo's dagcache: its settings, the banner, and serving with a live status line until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.admin import start_admin
from proxy.airflow.examples import BIG_DAG_ID
from proxy.app import CACHE, VERSIONS, create_app
from proxy.config import Settings
from proxy.demo import DemoError
from proxy.demo.progress import OneLine, status_line
from proxy.logs import JsonFormatter
from proxy.server import make_runner, wait_for_signal

ExitCode = Callable[[], int | None]
"""The Airflow server's exit code, ``None`` while it runs (``Popen.poll``)."""


@dataclass(frozen=True)
class Endpoints:
    """What the banner shows and the proxy is configured with."""

    host: str
    port: int
    admin_port: int
    airflow_url: str
    airflow_pid: int
    database_url: str
    redis_url: str
    key_prefix: str
    summary: str
    user: str
    password: str
    big_dag_tasks: int
    directory: Path
    server: str = "api-server"
    """What Airflow calls its server (``webserver`` for Airflow 2); its log is ``airflow/<server>.log``."""
    big_dag_path: str = f"/dags/{BIG_DAG_ID}"
    profile: str = "auto"
    clean_command: str = "dagcache demo --clean"


def demo_settings(settings: Settings, ends: Endpoints) -> Settings:
    """``settings`` (file and environment) with what the demo needs: its ports, the Airflow server upstream
    (and its profile), the demo's DB and store, caching on, one process."""

    def section(name: str, **values: Any) -> Any:
        return getattr(settings, name).model_copy(update=values)

    return settings.model_copy(
        update={
            "server": section("server", host=ends.host, port=ends.port, workers=1, shutdown_grace=3.0),
            "admin": section("admin", enabled=True, host=ends.host, port=ends.admin_port),
            "upstream": section("upstream", url=ends.airflow_url, profile=ends.profile),
            "database": section("database", url=ends.database_url),
            "redis": section("redis", url=ends.redis_url, key_prefix=ends.key_prefix),
            "cache": section("cache", mode="on"),
        }
    )


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def banner(ends: Endpoints) -> str:
    proxy = f"http://{url_host(ends.host)}:{ends.port}"
    rows = [
        ("Airflow UI through dagcache", f"{proxy}/"),
        ("login", f"{ends.user} / {ends.password}"),
        (f"the {ends.big_dag_tasks}-task DAG", f"{proxy}{ends.big_dag_path}"),
        ("Airflow directly (no cache)", f"{ends.airflow_url}/  ({ends.server} pid {ends.airflow_pid})"),
        ("dagcache status page", f"http://{url_host(ends.host)}:{ends.admin_port}/  (and /metrics, /healthz)"),
        ("logs", f"{ends.directory / 'dagcache.log'}, {ends.directory / 'airflow' / f'{ends.server}.log'}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(
        [
            "",
            f"dagcache demo is up: {ends.summary}",
            "",
            *(f"  {label.ljust(width)}  {value}" for label, value in rows),
            "",
            f"Stop with Ctrl-C: {ends.directory} stays for a fast restart; `{ends.clean_command}` removes it.",
            "",
        ]
    )


def log_to_file(path: Path) -> None:
    """The proxy's JSON log goes to ``path``; only warnings and errors reach the terminal."""
    to_file = logging.FileHandler(path)
    to_file.setFormatter(JsonFormatter())
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("\ndagcache: %(levelname)s %(message)s"))
    logging.getLogger().handlers[:] = [to_file, console]


async def serve(settings: Settings, sock: socket.socket, ends: Endpoints, airflow_exit: ExitCode) -> None:
    """Serve the proxy and its admin listener, print the banner, keep the status line fresh until
    SIGINT/SIGTERM (or until the api-server exits: :class:`DemoError`)."""
    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    admin: web.AppRunner | None = None
    display = OneLine(sys.stderr, prefix="  ", interval=10.0)
    status: asyncio.Task[None] | None = None
    try:
        await web.SockSite(runner, sock).start()
        try:
            admin = await start_admin(settings)
        except OSError as exc:
            raise DemoError(
                f"admin port {ends.admin_port}: {exc.strerror} (choose another with --admin-port)"
            ) from None
        await _until_versions(app)
        print(banner(ends), flush=True)
        status = asyncio.get_running_loop().create_task(_show_status(app, display))
        await _until_signal_or_exit(airflow_exit, ends.server, ends.directory / "airflow" / f"{ends.server}.log")
    finally:
        if status is not None:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
            display.done(_status(app))
        await runner.cleanup()
        if admin is not None:
            await admin.cleanup()


async def _until_signal_or_exit(airflow_exit: ExitCode, server: str, log: Path) -> None:
    loop = asyncio.get_running_loop()
    signalled = loop.create_task(wait_for_signal())
    try:
        while not signalled.done():
            code = airflow_exit()
            if code is not None:
                raise DemoError(f"the Airflow {server} exited with {code} (its log: {log}); stopping")
            await asyncio.wait({signalled}, timeout=1.0)
    finally:
        signalled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signalled


async def _until_versions(app: web.Application) -> None:
    """Wait (up to 30 s) for the first version poll, so that the first request can already be cached."""
    versions = app.get(VERSIONS)
    for _ in range(150):
        if versions is None or versions.fresh():
            return
        await asyncio.sleep(0.2)


def _status(app: web.Application) -> str:
    cache, versions = app.get(CACHE), app.get(VERSIONS)
    return status_line(cache.counters if cache is not None else None, versions.stats if versions is not None else None)


async def _show_status(app: web.Application, display: OneLine) -> None:
    while True:
        display.show(_status(app))
        await asyncio.sleep(1.0)

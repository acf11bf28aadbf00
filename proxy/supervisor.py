"""Process model for ``dagcache serve``.

* ``workers = 1``: one process serves the proxy and the admin listener.
* ``workers = N > 1``: N worker processes each bind the proxy port with ``SO_REUSEPORT`` (the kernel
  spreads connections); this supervisor process serves the admin listener, restarts a worker that dies,
  and on SIGTERM/SIGINT passes the signal on and waits ``shutdown_grace`` (+5 s) before it kills
  stragglers. A worker that cannot start (port taken, say) stops the whole service with exit code 1
  instead of a restart loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.process import BaseProcess
from typing import Any

from proxy import logs
from proxy.admin import start_admin
from proxy.config import Settings, redact_url
from proxy.metrics import MULTIPROC_ENV, Telemetry, mark_dead, multiprocess_registry
from proxy.server import bind_socket, serve_proxy, wait_for_signal

log = logging.getLogger("proxy.supervisor")

EXIT_BIND_FAILED = 3
_QUICK_FAILURE = 5.0
_MAX_QUICK_FAILURES = 3


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when configured (or ``auto`` and installed), else asyncio's default."""
    choice = settings.server.event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            log.warning("server.event_loop = 'uvloop' but uvloop is not installed (pip install 'dagcache[uvloop]')")
        return None
    return uvloop.new_event_loop


def run_async(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(main)


def serve(settings: Settings) -> int:
    """Run ``dagcache serve`` until SIGTERM/SIGINT; returns the process exit code."""
    server = settings.server
    admin = f", admin on {settings.admin.host}:{settings.admin.port}" if settings.admin.enabled else ""
    log.info(
        "dagcache listening on %s:%d -> %s (%d worker%s%s)",
        server.host,
        server.port,
        redact_url(settings.upstream.url),
        server.workers,
        "" if server.workers == 1 else "s",
        admin,
    )
    if server.workers == 1:
        try:
            sock = bind_socket(server.host, server.port, reuse_port=False)
        except OSError as exc:
            log.error("%s", exc.strerror)
            return 1
        registry = Telemetry.default().registry
        extra = (lambda: start_admin(settings, registry=registry)) if settings.admin.enabled else None
        try:
            run_async(settings, serve_proxy(settings, sock=sock, extra=extra))
        except OSError as exc:
            log.error("cannot start: %s", _admin_bind_error(settings, exc))
            return 1
        return 0
    try:
        bind_socket(server.host, server.port, reuse_port=True).close()
    except OSError as exc:
        log.error("%s", exc.strerror)
        return 1
    return _Supervisor(settings).run()


def _admin_bind_error(settings: Settings, exc: OSError) -> str:
    admin = settings.admin
    return f"admin listener on {admin.host}:{admin.port}: {exc.strerror or exc} (set [admin] port or enabled)"


def worker_main(settings: Settings, worker: int, supervisor: int | None = None) -> None:
    """Entry point of a worker process (spawned: it shares no state with the supervisor, whose pid is
    ``supervisor``: a worker that starts after the supervisor died must not take init for its parent)."""
    logs.configure(settings.log, worker=worker)
    parent = supervisor if supervisor is not None else os.getppid()
    if os.getppid() != parent:
        log.error("the supervisor (pid %d) is gone; this worker stops", parent)
        raise SystemExit(1)
    if metrics_dir := os.environ.get(MULTIPROC_ENV):
        os.makedirs(metrics_dir, exist_ok=True)  # a /tmp cleaner may have removed it while the fleet ran
    try:
        sock = bind_socket(settings.server.host, settings.server.port, reuse_port=True)
    except OSError as exc:
        log.error("%s", exc.strerror)
        raise SystemExit(EXIT_BIND_FAILED) from None
    run_async(settings, serve_proxy(settings, sock=sock, until=lambda: _signal_or_orphaned(parent)))


async def _signal_or_orphaned(parent: int) -> None:
    """Return on SIGTERM/SIGINT, or when the supervisor died (a worker must never outlive it)."""
    signalled = asyncio.ensure_future(wait_for_signal())
    try:
        while not signalled.done():
            if os.getppid() != parent:
                log.error("the supervisor (pid %d) is gone; this worker stops", parent)
                return
            await asyncio.wait([signalled], timeout=1.0)
    finally:
        signalled.cancel()


class _Supervisor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, tuple[BaseProcess, float]] = {}
        self._quick_failures = 0
        self._failed = False
        # Workers write their metrics here; the admin listener (this process) aggregates them.
        self._metrics_dir = tempfile.mkdtemp(prefix="dagcache-metrics-")

    def run(self) -> int:
        os.environ[MULTIPROC_ENV] = self._metrics_dir  # inherited by the spawned workers
        try:
            for index in range(self._settings.server.workers):
                self._start(index)
            try:
                run_async(self._settings, self._main())
            except OSError as exc:
                log.error("cannot start: %s", _admin_bind_error(self._settings, exc))
                self._failed = True
            finally:
                self._stop_all()
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return 1 if self._failed else 0

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(self._settings, index, os.getpid()),
            name=f"dagcache-worker-{index}",
            daemon=False,
        )
        process.start()
        self._workers[index] = (process, time.monotonic())
        log.info("worker %d started (pid %s)", index, process.pid)

    def liveness(self) -> tuple[bool, dict[str, object]]:
        alive = sum(1 for process, _ in self._workers.values() if process.is_alive())
        return alive == len(self._workers), {"workers": len(self._workers), "workers_alive": alive}

    async def _main(self) -> None:
        registry = multiprocess_registry(self._metrics_dir)
        admin = await start_admin(self._settings, self.liveness, registry) if self._settings.admin.enabled else None
        try:
            signal_task = asyncio.ensure_future(wait_for_signal())
            while not signal_task.done() and not self._failed:
                self._reap()
                await asyncio.wait([signal_task], timeout=0.25)
            signal_task.cancel()
        finally:
            if admin is not None:
                await admin.cleanup()

    def _reap(self) -> None:
        for index, (process, started) in list(self._workers.items()):
            if process.is_alive():
                continue
            code = process.exitcode
            if process.pid is not None:
                mark_dead(process.pid, self._metrics_dir)
            quick = time.monotonic() - started < _QUICK_FAILURE
            self._quick_failures = self._quick_failures + 1 if quick else 0
            if code == EXIT_BIND_FAILED or self._quick_failures >= _MAX_QUICK_FAILURES:
                log.error("worker %d exited with code %s at startup; stopping dagcache", index, code)
                self._failed = True
                return
            log.warning("worker %d exited with code %s; restarting it", index, code)
            self._start(index)

    def _stop_all(self) -> None:
        processes = [process for process, _ in self._workers.values()]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.server.shutdown_grace + 5.0
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                log.warning("worker pid %s did not stop within the grace period; killing it", process.pid)
                process.kill()
                process.join(5.0)
        log.info("dagcache stopped")

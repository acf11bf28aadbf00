"""``dagcache demo --stand-in``: the proxy in front of a small built-in stand-in for Airflow's API (or a
given URL), in a second.

The stand-in answers a few Airflow 3 shaped JSON routes from memory so that the proxy can be tried on
a laptop with nothing else installed. It is not Airflow; ``dagcache demo`` without ``--stand-in`` brings
up a real one (:mod:`proxy.demo.stack`).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from proxy.admin import start_admin
from proxy.config import Settings
from proxy.server import bind_socket, serve_proxy, wait_for_signal
from proxy.supervisor import run_async

log = logging.getLogger("proxy.demo")

_DAGS = [
    {"dag_id": f"example_{i:02d}", "is_paused": i % 3 == 0, "tags": [{"name": "demo"}], "owners": ["airflow"]}
    for i in range(12)
]


async def _version(_: web.Request) -> web.Response:
    return web.json_response({"version": "3.3.2 (dagcache stand-in)", "git_version": None})


async def _dags(request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", "50"))
    return web.json_response({"dags": _DAGS[:limit], "total_entries": len(_DAGS)})


async def _dag(request: web.Request) -> web.Response:
    dag_id = request.match_info["dag_id"]
    for dag in _DAGS:
        if dag["dag_id"] == dag_id:
            return web.json_response(dag)
    return web.json_response({"detail": f"The Dag with ID: `{dag_id}` was not found"}, status=404)


async def _index(_: web.Request) -> web.Response:
    return web.Response(
        text="<!doctype html><title>dagcache demo</title><h1>dagcache stand-in upstream</h1>"
        '<p>Try <a href="/api/v2/dags">/api/v2/dags</a>.</p>',
        content_type="text/html",
    )


def standin_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_get("/api/v2/version", _version)
    app.router.add_get("/api/v2/dags", _dags)
    app.router.add_get("/api/v2/dags/{dag_id}", _dag)
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_demo(settings: Settings, *, upstream: str | None) -> int:
    standin_port = None
    if upstream is None:
        standin_port = _free_port()
        upstream = f"http://127.0.0.1:{standin_port}"
    settings = settings.model_copy(
        update={
            "upstream": settings.upstream.model_copy(update={"url": upstream}),
            "server": settings.server.model_copy(update={"workers": 1}),
        }
    )
    try:
        sock = bind_socket(settings.server.host, settings.server.port, reuse_port=False)
    except OSError as exc:
        log.error("%s (choose another with --port)", exc.strerror)
        return 1
    run_async(settings, _demo(settings, sock, standin_port))
    return 0


async def _demo(settings: Settings, sock: socket.socket, standin_port: int | None) -> None:
    standin: web.AppRunner | None = None
    if standin_port is not None:
        standin = web.AppRunner(standin_app(), access_log=None)
        await standin.setup()
        await web.TCPSite(standin, "127.0.0.1", standin_port).start()

    async def announce() -> web.AppRunner | None:
        admin = await start_admin(settings) if settings.admin.enabled else None
        port = settings.server.port
        what = "built-in stand-in upstream" if standin_port is not None else settings.upstream.url
        print(
            f"\ndagcache demo: http://127.0.0.1:{port}/api/v2/dags -> {what}\n"
            f"  health: http://127.0.0.1:{settings.admin.port}/healthz  ready: /readyz\n"
            "  stop with Ctrl-C\n",
            flush=True,
        )
        return admin

    try:
        await serve_proxy(settings, sock=sock, until=wait_for_signal, extra=announce)
    finally:
        if standin is not None:
            await standin.cleanup()
        await asyncio.sleep(0)

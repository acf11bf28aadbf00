"""A real aiohttp server standing in for Airflow in functional tests of the proxy's mechanics.

Every route reports what it received (method, raw target, headers, body digest), so tests assert on
what actually crossed the proxy.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Gates:
    """Events that let a test interleave client and upstream to prove nothing is buffered."""

    first_chunk_sent: asyncio.Event = field(default_factory=asyncio.Event)
    release_rest: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk_received: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict[str, object]] = field(default_factory=list)


GATES = web.AppKey("gates", Gates)


def _record(request: web.Request, body_len: int, digest: str) -> dict[str, object]:
    seen: dict[str, object] = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_len": body_len,
        "body_sha256": digest,
        "remote": request.remote,
    }
    request.app[GATES].requests.append(seen)
    return seen


async def echo(request: web.Request) -> web.Response:
    hasher = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        hasher.update(chunk)
        size += len(chunk)
    return web.json_response(_record(request, size, hasher.hexdigest()))


async def stream(request: web.Request) -> web.StreamResponse:
    """First chunk at once, the rest only after the test opens ``release_rest``."""
    gates = request.app[GATES]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(b'{"line": 1}\n')
    gates.first_chunk_sent.set()
    await asyncio.wait_for(gates.release_rest.wait(), 30)
    await response.write(b'{"line": 2}\n')
    await response.write_eof()
    return response


async def upload_gate(request: web.Request) -> web.Response:
    """Signals as soon as the first body bytes arrive, then reads the rest."""
    gates = request.app[GATES]
    hasher = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        if size == 0:
            gates.first_chunk_received.set()
        hasher.update(chunk)
        size += len(chunk)
    return web.json_response(_record(request, size, hasher.hexdigest()))


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "1048576"))
    block = bytes(range(256)) * 256  # 64 KiB
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b'{"compressed": true}' * 100)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json", "Vary": "Accept-Encoding"}
    )


async def cookies(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    response.headers.add("Set-Cookie", "_token=abc.def.ghi; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "session=xyz; Path=/airflow; Secure; SameSite=Lax")
    return response


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "http://airflow.internal:8080/login/?next=%2Fhome"})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code)
    return web.json_response({"status": code}, status=code)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return web.json_response({"slept": float(request.query.get("delay", "1"))})


async def hop(request: web.Request) -> web.Response:
    response = web.json_response(_record(request, 0, ""))
    response.headers["Connection"] = "X-Private-Hop"
    response.headers["X-Private-Hop"] = "secret"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Proxy-Authenticate"] = "Basic"
    response.headers["Upgrade"] = "h2c"
    response.headers["X-End-To-End"] = "kept"
    return response


async def truncate(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"partial": ')
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return response


def make_upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[GATES] = Gates()
    app.router.add_get("/stream", stream)
    app.router.add_post("/upload-gate", upload_gate)
    app.router.add_get("/big", big)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/redirect", redirect)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hop", hop)
    app.router.add_get("/truncate", truncate)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app

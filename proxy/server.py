"""Sockets and lifecycle of one process: the proxy listener (and, in a single-process setup, the admin one).

* aiohttp's parser answers malformed or oversized requests itself, as ``400 text/plain`` with a logged
  traceback. :class:`_ProxyRequestHandler` answers them instead as JSON 400/414/431 with one log line.
* SIGTERM/SIGINT stop accepting, close idle keep-alive connections and let in-flight requests finish
  for ``server.shutdown_grace`` seconds; what is still running then is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from proxy.app import create_app
from proxy.config import Settings
from proxy.errors import RequestRejected
from proxy.limits import headers_too_large, malformed, url_too_long
from proxy.logs import AccessLogger

log = logging.getLogger("proxy.server")


class _ProxyRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection protocol, with parser errors answered as JSON and logged in one line."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        rejection = _parser_rejection(exc, self.max_line_size)
        log.info(
            "malformed request from %s -> %d %s",
            request.remote,
            rejection.status,
            rejection.detail,
            extra={"error": rejection.error},
        )
        response = web.json_response({"error": rejection.error, "detail": rejection.detail}, status=rejection.status)
        response.force_close()
        return response


def _parser_rejection(exc: HttpProcessingError, max_line_size: int) -> RequestRejected:
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line_size:
            return url_too_long(max_line_size)
        return headers_too_large(f"a header field is longer than {limit} bytes")
    if isinstance(exc, BadHttpMessage) and "too many headers" in (exc.message or "").lower():
        return headers_too_large("too many header fields")
    return malformed(f"malformed HTTP request: {exc.message or type(exc).__name__}")


class _ProxyServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ProxyRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use :class:`_ProxyRequestHandler`."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _ProxyServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **base._kwargs,
        )


def parser_limits(settings: Settings) -> dict[str, Any]:
    """aiohttp parser limits derived from the config: the request line is exactly ``max_url_length``
    (so the parser's refusal maps to 414); a single header field may use the whole header budget
    (the total and the count are checked in :mod:`proxy.limits`, mapped to 431)."""
    server = settings.server
    field = server.max_header_size
    if field == server.max_url_length:  # keep the two limits distinguishable in handle_error
        field += 1
    return {
        "max_line_size": server.max_url_length,
        "max_field_size": field,
        "max_headers": server.max_header_count + 1,
    }


def make_runner(app: web.Application, settings: Settings) -> ProxyRunner:
    return ProxyRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.server.shutdown_grace,
        keepalive_timeout=settings.server.keepalive_timeout,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("proxy.access"),
        **parser_limits(settings),
    )


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket, or :class:`OSError` with the address in the message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


StopWaiter = Callable[[], Awaitable[None]]


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve_proxy(
    settings: Settings,
    *,
    sock: socket.socket,
    until: StopWaiter = wait_for_signal,
    extra: Callable[[], Awaitable[web.AppRunner | None]] | None = None,
) -> None:
    """Serve the proxy on ``sock`` until ``until()`` returns, then shut down gracefully."""
    runner = make_runner(create_app(settings), settings)
    await runner.setup()
    extra_runner: web.AppRunner | None = None
    try:
        await web.SockSite(runner, sock).start()
        if extra is not None:
            extra_runner = await extra()
        await until()
        log.info("shutting down: in-flight requests have %.0f s to finish", settings.server.shutdown_grace)
    finally:
        await runner.cleanup()
        if extra_runner is not None:
            await extra_runner.cleanup()

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
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from aiohttp import __version__ as aiohttp_version, web, web_protocol
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import HttpRequestParser

from proxy import logs
from proxy.app import CACHE, SETTINGS, TELEMETRY, create_app, limits_of
from proxy.config import Settings
from proxy.errors import RequestRejected
from proxy.hitlane import HitLane, LaneRequest, LaneResponse
from proxy.limits import headers_too_large, malformed, url_too_long
from proxy.logs import AccessLogger

log = logging.getLogger("proxy.server")

_MAX_MSG_QUEUE_SIZE: int = getattr(web_protocol, "MAX_MSG_QUEUE_SIZE", 32)  # where aiohttp's parser pauses


class _Parsed:
    """Stands in for the parser while aiohttp's ``data_received`` takes what the hit lane left: the messages
    (and upgrade state) already parsed, or the parser's error."""

    __slots__ = ("_error", "_result")

    def __init__(self, result: tuple[Sequence[Any], bool, bytes], error: HttpProcessingError | None) -> None:
        self._result = result
        self._error = error

    def feed_data(self, data: bytes) -> tuple[Sequence[Any], bool, bytes]:
        result, error = self._result, self._error
        self._result, self._error = ((), False, b""), None  # once: nothing is handed over twice
        if error is not None:
            raise error
        return result


class _ProxyRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection protocol, with parser errors answered as JSON and logged in one line, and the hit
    lane (:mod:`proxy.hitlane`) in front of aiohttp's request queue."""

    __slots__ = ("_lane",)

    def __init__(self, manager: web.Server, *, lane: HitLane | None = None, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._lane = lane

    def data_received(self, data: bytes) -> None:
        lane = self._lane
        waiter = self._waiter
        if (
            lane is None
            or waiter is None  # aiohttp is not waiting for a request: queued, in progress or starting
            or waiter.done()
            or self._messages
            or self._payload_parser is not None
            or self._upgraded
            or self._force_close
            or self._close
            or self._paused  # writes paused: aiohttp's handlers wait for the drain
            or self._buffer_paused  # reads paused: aiohttp's queue is full
            or self.transport is None
        ):
            super().data_received(data)
            return
        self._lane_received(lane, data)

    def _lane_received(self, lane: HitLane, data: bytes) -> None:
        """Answer the hits at the head of ``data`` and hand everything from the first other message on to
        aiohttp. Called only while aiohttp is idle, so every message the parser parsed before was consumed."""
        parser = self._parser
        assert parser is not None and self.transport is not None
        transport = self.transport
        answered = 0
        pending: list[Any] = []  # parsed, not answered here: aiohttp's, in order
        upgraded, tail = False, b""
        while True:
            try:
                messages, upgraded, tail = parser.feed_data(data)
            except HttpProcessingError as exc:
                if pending:
                    self._hand_over((pending, False, b""), None)
                self._hand_over(((), False, b""), exc)
                pending, upgraded, tail = [], False, b""
                break
            # The parser stops at _MAX_MSG_QUEUE_SIZE messages not yet consumed, keeping the rest of the data.
            stopped = len(pending) + len(messages) >= _MAX_MSG_QUEUE_SIZE
            for item in messages:
                message = item[0]
                started = time.perf_counter()
                if pending or self._paused or not isinstance(message, RawRequestMessage):
                    pending.append(item)
                    continue
                try:
                    answer = lane.answer(message)
                except Exception:  # a bug must not cost the connection: the full path answers (or says 500)
                    log.exception("hit lane: %s %s left to aiohttp", message.method, message.path[:200])
                    answer = None
                if answer is None:
                    pending.append(item)
                    continue
                transport.write(answer.head + lane.tail + answer.body)
                parser.message_consumed()
                answered += 1
                seconds = time.perf_counter() - started
                try:
                    lane.record(answer, seconds)
                    access = self.access_logger
                    if self._logging_enabled and access is not None:
                        if isinstance(access, AccessLogger):
                            access.log_lane(message, answer, lane.tail, _remote(self.peername), seconds)
                        else:
                            request = cast(web.BaseRequest, LaneRequest(message, answer, _remote(self.peername)))
                            response = cast(web.StreamResponse, LaneResponse(answer, lane.tail))
                            access.log(request, response, seconds)
                except Exception:
                    log.exception("hit lane: counting or logging an answer failed")
            if upgraded or tail or not stopped or len(pending) >= _MAX_MSG_QUEUE_SIZE:
                break  # (a full queue: aiohttp pauses reading and feeds the parser again once it drained)
            data = b""  # the parser stopped at its limit but has room again: go on with what it kept
        if pending or upgraded or tail:
            self._hand_over((pending, upgraded, tail), None)
        if answered:
            self._request_count += answered
            if self._manager is not None:
                self._manager.requests_count += answered
            if self._keepalive_timeout > 0:  # as aiohttp does after each request it answers
                loop = self._loop
                close_time = loop.time() + self._keepalive_timeout
                self._next_keepalive_close_time = close_time
                if self._keepalive_handle is None:
                    self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)

    def _hand_over(self, result: tuple[Sequence[Any], bool, bytes], error: HttpProcessingError | None) -> None:
        """aiohttp's own ``data_received`` on what the lane parsed but does not answer (queued, upgrade and
        error handling exactly as without the lane)."""
        parser = self._parser
        self._parser = cast(Any, _Parsed(result, error))
        try:
            super().data_received(b"")
        finally:
            if self._parser is not None:  # None: the connection was lost meanwhile
                self._parser = parser

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


def _remote(peername: object) -> str | None:
    """``request.remote`` as aiohttp derives it from the peer name."""
    if peername is None:
        return None
    if isinstance(peername, (list, tuple)):
        return str(peername[0])
    return str(peername)


class _ProxyServer(web.Server):
    lane: HitLane | None = None

    def __call__(self) -> web_protocol.RequestHandler:
        return _ProxyRequestHandler(self, loop=self._loop, lane=self.lane, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use :class:`_ProxyRequestHandler`, with the hit lane when the app has
    a cache layer (known once the app has started, which ``AppRunner._make_server`` does first)."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        server = _ProxyServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **base._kwargs,
        )
        if SETTINGS in self.app:
            server.lane = hit_lane(self.app, self.app[SETTINGS])
        return server


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


def hit_lane(app: web.Application, settings: Settings) -> HitLane | None:
    """The hit lane for ``app`` (after its startup), or None: off in the config, no cache layer, or an aiohttp
    whose connection protocol lacks what the lane relies on."""
    if not settings.server.hit_lane or CACHE not in app:
        return None
    missing = [name for name in _LANE_NEEDS if not hasattr(web_protocol.RequestHandler, name)]
    if not hasattr(HttpRequestParser, "message_consumed"):
        missing.append("HttpRequestParser.message_consumed")
    if missing:
        log.warning(
            "hit lane off: aiohttp %s's RequestHandler has no %s; every request takes the full path",
            aiohttp_version,
            ", ".join(missing),
        )
        return None
    return HitLane(app[CACHE], app[TELEMETRY], limits_of(settings))


# What _ProxyRequestHandler reads or sets of aiohttp's RequestHandler for the lane (aiohttp 3.11-3.14).
_LANE_NEEDS = (
    "_waiter",
    "_messages",
    "_payload_parser",
    "_upgraded",
    "_force_close",
    "_close",
    "_paused",
    "_buffer_paused",
    "_parser",
    "_request_count",
    "_manager",
    "_keepalive_timeout",
    "_next_keepalive_close_time",
    "_keepalive_handle",
    "_process_keepalive",
    "_logging_enabled",
    "access_logger",
    "peername",
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
        try:
            await runner.cleanup()
            if extra_runner is not None:
                await extra_runner.cleanup()
        finally:
            logs.flush()  # the access lines still buffered, before the loop closes

"""Logging: one JSON object per line (or text for humans), one access-log line per request.

The code logs through the standard library (``logging.getLogger(__name__)``, ``extra={...}``); structlog renders
the lines through its stdlib integration (:class:`structlog.stdlib.ProcessorFormatter` on the root handler), so
``structlog.get_logger("proxy.x").info("event", key=value)`` produces the same lines. Every line has ``ts``
(UTC, milliseconds), ``level``, ``logger``, ``msg``, then the record's fields (``worker`` with ``--workers N``),
then ``exc`` (the traceback as one string) if there is one.

Credentials never reach a log line: the access log records method, path (no query string: Airflow clients may
put tokens in it), route (the route table's name, ``other`` or ``passthrough``), cache outcome
(``HIT``/``MISS``/``BYPASS``/``STALE``/``304``), status, duration, sizes, ``request_id`` (the client's
``X-Request-Id`` when it is safe to log, else null), ``trace_id``/``span_id`` (from a valid ``traceparent``) and,
for a cached view, ``key``: the entry's ETag, a digest of the cache key (never the key's parts). URLs with
passwords go through :func:`proxy.config.redact_url` before they are logged.

Access lines skip ``logging`` while the root handler is the one :func:`configure` installed (``dagcache serve``
and its workers): :class:`AccessLogger` formats them with :mod:`proxy.accessline` (the same bytes) and hands
them to the handler's :class:`~proxy.accessbuffer.AccessBuffer`, written in batches (at most every 0.1 s or
64 KiB, before any other line, at shutdown). With any other handler on the way (a test's ``caplog``, an
application embedding dagcache), they go through ``logging`` as every other line does.

The full path's lines are rendered when their batch is written, not when aiohttp logs the request: aiohttp
logs after writing the answer and before it waits for the connection's next request, and a request that
arrives in between is not the hit lane's (aiohttp is not idle): with the line rendered there (3-4 µs), busy
keep-alive connections stayed on the full path for seconds (measured with ``wrk``: 10k of 15k requests a second
for 4-12 s after connecting, against under 1 s with the access log off).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from select import PIPE_BUF
from typing import Any, TextIO, cast

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import RawRequestMessage
from aiohttp.web import BaseRequest, StreamResponse
from structlog.typing import EventDict, Processor, WrappedLogger

from proxy.accessbuffer import AccessBuffer, pieces
from proxy.accessline import LOGGER, AccessLine, Parts, text_value
from proxy.config import LogConfig
from proxy.correlation import request_id, trace_ids
from proxy.hitlane import LaneRequest, LaneResponse
from proxy.hitwire import LaneAnswer
from proxy.metrics import note_of

_now = time.time
_LANE_PARTS = 1024  # answers whose line parts are kept

#: LogRecord attributes that are not ``extra`` fields (``message`` and ``asctime`` appear once a formatter ran).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def timestamp(record: logging.LogRecord) -> str:
    """``2026-01-31T12:00:00.123Z``: when the record was made (not when it is rendered), UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def record_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The line's fields in order: ``ts``, ``level``, ``logger``, ``msg``, the record's ``extra`` fields, what a
    structlog logger bound, ``exc``. Takes the place of structlog's own ``event``, ``_record`` and
    ``_from_structlog`` keys (put there by :class:`~structlog.stdlib.ProcessorFormatter`)."""
    record: logging.LogRecord = event_dict.pop("_record")
    event_dict.pop("_from_structlog", None)
    fields: EventDict = {
        "ts": timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": event_dict.pop("event", ""),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key[0] != "_":
            fields[key] = value
    exc = event_dict.pop("exception", None)  # structlog.processors.format_exc_info's rendering of exc_info
    fields.update(event_dict)
    if exc is not None:
        fields["exc"] = exc
    return fields


def render_text(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """``ts LEVEL logger msg key=value ...`` (``None`` values left out) and the traceback on the following lines."""
    head = f"{event_dict.pop('ts')} {str(event_dict.pop('level')).upper()} {event_dict.pop('logger')} "
    head += str(event_dict.pop("msg"))
    exc = event_dict.pop("exc", None)
    pairs = "".join(f" {key}={text_value(value)}" for key, value in event_dict.items() if value is not None)
    return head + pairs + (f"\n{exc}" if exc else "")


_FIELDS: tuple[Processor, ...] = (structlog.processors.format_exc_info, record_fields)
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def _to_json(event_dict: EventDict, **_: Any) -> str:
    """One encoder for every line (``json.dumps`` with options builds a new one per call)."""
    return _ENCODER.encode(event_dict)


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """``{"ts", "level", "logger", "msg", ...fields, "exc"}`` on one line."""

    def __init__(self) -> None:
        super().__init__(processors=[*_FIELDS, structlog.processors.JSONRenderer(serializer=_to_json)])


class TextFormatter(structlog.stdlib.ProcessorFormatter):
    """The same fields for a terminal: ``ts LEVEL logger msg key=value ...``."""

    def __init__(self) -> None:
        super().__init__(processors=[*_FIELDS, render_text])


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler: a ``StreamHandler`` that also writes the access lines kept in :attr:`access` (one
    write per batch), and writes them first whenever it writes another line or is flushed, so the log keeps
    the order in which lines were logged."""

    def __init__(self, stream: TextIO, line: AccessLine, *, shared: bool = False) -> None:
        """``shared``: other processes write to the same stream (``--workers N``)."""
        super().__init__(stream)
        assert self.lock is not None
        self.line = line
        self._shared = shared
        self._pipe: tuple[object, bool] = (None, False)  # a stream and whether it is a pipe or a socket
        self.access = AccessBuffer(self._write_access, self.lock, failed=self._access_failed)
        self.access_lost = 0  # lines that could not be rendered or written
        self.lane_parts: dict[str, tuple[str, str, str, int, Parts]] = {}
        """Per request target: method, ETag, outcome, bytes and the line's parts (:meth:`AccessLogger.log_lane`)."""

    def keep_lane_parts(self, target: str, kept: tuple[str, str, str, int, Parts]) -> None:
        if len(self.lane_parts) >= _LANE_PARTS:
            self.lane_parts.clear()  # bounded: a fleet's views are far fewer; a scan of odd URLs costs a rebuild
        self.lane_parts[target] = kept

    def _write_access(self, text: str) -> None:
        try:
            stream = self.stream
            if self._shared and len(text) > PIPE_BUF and self._is_pipe(stream):
                for piece in pieces(text, PIPE_BUF):  # no other worker's line in the middle of one of ours
                    stream.write(piece)
                    stream.flush()
            else:
                stream.write(text)
                stream.flush()
        except Exception:
            self.access_lost += text.count("\n")
            self.handleError(logging.makeLogRecord({"name": LOGGER, "msg": "a batch of access lines was lost"}))

    def _is_pipe(self, stream: TextIO) -> bool:
        if self._pipe[0] is not stream:
            try:
                mode = os.fstat(stream.fileno()).st_mode
            except (AttributeError, OSError, ValueError):  # io.StringIO, a closed or unusual stream
                self._pipe = (stream, False)
            else:
                self._pipe = (stream, stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))
        return self._pipe[1]

    def _access_failed(self, exc: Exception) -> None:
        self.access_lost += 1
        self.handleError(logging.makeLogRecord({"name": LOGGER, "msg": "an access line could not be rendered"}))

    def emit(self, record: logging.LogRecord) -> None:
        self.access.flush()
        super().emit(record)

    def flush(self) -> None:
        self.access.flush()
        super().flush()


_installed: LogHandler | None = None


def configure(config: LogConfig, *, worker: int | None = None) -> None:
    """Install the root handler (stderr) for this process, and route structlog loggers through it."""
    global _installed
    if _installed is not None:
        _installed.access.flush()  # what the former handler kept (its write reports its own errors)
    handler = LogHandler(sys.stderr, AccessLine(config.format, worker), shared=worker is not None)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # No line shows the caller's file/function or the thread and process names: skip collecting them for every
    # record (the Logging HOWTO's "Optimization" knobs). This pays for the record copy ProcessorFormatter makes.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.getLogger("proxy.access").disabled = not config.access_log
    # aiohttp logs parser errors with tracebacks at "aiohttp.server"; proxy.server answers them itself.
    logging.getLogger("aiohttp.access").disabled = True
    _installed = handler


def flush() -> None:
    """Write the access lines still kept (at shutdown, on the event loop's thread before it closes)."""
    if _installed is not None:
        _installed.access.close()


def _direct(logger: logging.Logger) -> LogHandler | None:
    """The handler :func:`configure` installed if it is the only one a line of ``logger`` reaches, with no
    filter on the way (what it would write for an access line is then known), else None."""
    handler = _installed
    if handler is None or logging.getLogger().handlers != [handler]:
        return None
    node: logging.Logger | None = logger
    while node is not None and node.parent is not None:  # up to the root
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    return handler


def _full_path_line(
    line: AccessLine,
    now: float,
    method: str,
    path: str,
    status: int,
    seconds: float,
    size: int,
    remote: str | None,
    rid: str | None,
    route: str | None,
    outcome: str | None,
    key: str | None,
    traceparent: list[str] | None,
) -> str:
    """The access line of a request aiohttp answered (:meth:`AccessLogger.log`'s values), logged at ``now``."""
    return line.format(
        now,
        method,
        path,
        status,
        seconds,
        size,
        remote,
        None if rid is None else request_id(rid),
        route,
        outcome,
        None if key is None else key.strip('"'),
        None if traceparent is None else trace_ids(traceparent),
    )


class _WorkerFilter(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


class AccessLogger(AbstractAccessLogger):
    """One line per request at INFO on ``proxy.access``. aiohttp calls :meth:`log` only while :attr:`enabled`
    (read once per connection): with the access log off, a request pays nothing here.

    aiohttp makes one per connection; it decides then whether the lines skip ``logging`` (see the module's
    docstring). The hit lane calls :meth:`log_lane` with what it has (no ``Request`` or response object)."""

    __slots__ = ("_handler",)

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._handler = _direct(logger) if logger.name == LOGGER else None

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        handler = self._handler
        if handler is None:
            self._log_record(request, response, time)
            return
        # Rendered when the batch is written: aiohttp calls this after writing the answer and before it waits
        # for the connection's next request; a request that arrives meanwhile takes the full path again. Only
        # strings and numbers are kept (keeping the request would keep its objects alive into the collector's
        # oldest generation: full collections, tens of milliseconds each, every few hundred milliseconds).
        note = note_of(request)
        headers = request.headers
        handler.access.defer(
            _full_path_line,
            (
                handler.line,
                _now(),
                request.method,
                request.path[:300],
                response.status,
                time,
                response.body_length,
                request.remote,
                headers.get("X-Request-Id"),
                None if note is None else note.route,
                None if note is None else note.outcome,
                None if note is None else note.key,
                headers.getall("traceparent") if "traceparent" in headers else None,
            ),
        )

    def log_lane(
        self, message: RawRequestMessage, answer: LaneAnswer, tail: bytes, remote: str | None, time: float
    ) -> None:
        """The line for ``answer``, which the hit lane wrote (``answer.head + tail + answer.body``) for
        ``message``: the line :meth:`log` writes for the same answer on the full path. The line's parts that
        depend on the answer are kept per request target (:attr:`LogHandler.lane_parts`)."""
        handler = self._handler
        if handler is None:
            request = cast(BaseRequest, LaneRequest(message, answer, remote))
            self.log(request, cast(StreamResponse, LaneResponse(answer, tail)), time)
            return
        method, target, etag, outcome = message.method, message.path, answer.etag, answer.outcome
        size = len(answer.head) + len(tail) + len(answer.body)
        kept = handler.lane_parts.get(target)
        if kept is not None and kept[1] == etag and kept[2] == outcome and kept[3] == size and kept[0] == method:
            parts = kept[4]  # the same method, path, entry (the ETag digests its key), route, outcome and bytes
        else:
            path = message.url.path[:300]
            parts = handler.line.parts(method, path, answer.status, size, answer.route, outcome, etag.strip('"'))
            handler.keep_lane_parts(target, (method, etag, outcome, size, parts))
        headers = message.headers
        rid = headers.get("X-Request-Id")
        handler.access.add(
            handler.line.line(
                _now(),
                parts,
                time,
                remote,
                None if rid is None else request_id(rid),
                trace_ids(headers.getall("traceparent")) if "traceparent" in headers else None,
            )
        )

    def _log_record(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """The line through ``logging`` (a ``LogRecord`` with the fields as ``extra``)."""
        note = note_of(request)
        headers = request.headers
        extra: dict[str, Any] = {
            "method": request.method,
            "path": request.path[:300],
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "bytes": response.body_length,
            "remote": request.remote,
            "request_id": request_id(headers.get("X-Request-Id")),
        }
        if note is not None:
            extra["route"] = note.route
            extra["outcome"] = note.outcome
            if note.key is not None:
                extra["key"] = note.key.strip('"')
        if "traceparent" in headers and (ids := trace_ids(headers.getall("traceparent"))) is not None:
            extra["trace_id"], extra["span_id"] = ids
        self.logger.info(
            "%s %s %d %s",
            request.method,
            request.path[:300],
            response.status,
            note.outcome if note is not None else "-",
            extra=extra,
        )

    @property
    def enabled(self) -> bool:
        return not self.logger.disabled and self.logger.isEnabledFor(logging.INFO)

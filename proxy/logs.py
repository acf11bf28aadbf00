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
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from structlog.typing import EventDict, Processor, WrappedLogger

from proxy.config import LogConfig
from proxy.correlation import request_id, trace_ids
from proxy.metrics import note_of

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
    pairs = "".join(f" {key}={_text_value(value)}" for key, value in event_dict.items() if value is not None)
    return head + pairs + (f"\n{exc}" if exc else "")


def _text_value(value: object) -> str:
    text = str(value)
    return text if text and not any(c.isspace() or c in "\"'=" for c in text) else repr(text)


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


def configure(config: LogConfig, *, worker: int | None = None) -> None:
    """Install the root handler (stderr) for this process, and route structlog loggers through it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # No line shows the caller's file/function or the thread and process names: skip collecting them for every
    # record (the Logging HOWTO's "Optimization" knobs). This pays for the record copy ProcessorFormatter makes:
    # an access line costs about what it did with the former hand-written formatter.
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


class _WorkerFilter(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


class AccessLogger(AbstractAccessLogger):
    """One line per request at INFO on ``proxy.access``. aiohttp calls :meth:`log` only while :attr:`enabled`
    (read once per connection): with the access log off, a request pays nothing here."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
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

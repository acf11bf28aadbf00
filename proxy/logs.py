"""Logging: one JSON object per line (or plain text), one access-log line per request.

Credentials never reach a log line: the access log records method, path (no query string: Airflow
clients may put tokens in it), route (the route table's name, ``other`` or ``passthrough``), cache outcome
(``HIT``/``MISS``/``BYPASS``/``STALE``/``304``), status, duration, sizes and, for a cached view, ``key``: the
entry's ETag, a digest of the cache key (never the key's parts); URLs with passwords go through
:func:`proxy.config.redact_url` before they are logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from proxy.config import LogConfig
from proxy.metrics import note_of

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` on one line; exceptions as a single string field."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def configure(config: LogConfig, *, worker: int | None = None) -> None:
    """Install the root handler (stderr) for this process."""
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"[w{worker}] " if worker is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s {prefix}%(message)s"))
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
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
    """One line per request at INFO on ``proxy.access``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        note = note_of(request)
        extra: dict[str, object] = {
            "method": request.method,
            "path": request.path[:300],
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "bytes": response.body_length,
            "remote": request.remote,
        }
        if note is not None:
            extra["route"] = note.route
            extra["outcome"] = note.outcome
            if note.key is not None:
                extra["key"] = note.key.strip('"')
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

"""The access line, formatted directly (pure: strings in, a string out).

The same line, byte for byte, that :mod:`proxy.logs`'s formatters render for a ``proxy.access`` record with
the access logger's fields (``tests/unit/test_accessline.py`` compares the two), without a ``LogRecord``, a
record copy, structlog's processors or a dict: the constant parts are prepared once, strings go through the
C string encoder that ``json.dumps`` itself uses, and the timestamp's part up to the second is computed once
per second (the milliseconds come from a table).

JSON: ``{"ts","level","logger","msg","method","path","status","duration_ms","bytes","remote","request_id"``,
then ``"route","outcome"`` (and ``"key"``) when the request carries a telemetry note, ``"trace_id","span_id"``
when it has a valid ``traceparent``, ``"worker"`` with ``--workers N``. Text: ``ts INFO proxy.access msg`` and
the same fields as ``key=value``, those without a value left out.
"""

from __future__ import annotations

import json
import math
import re
import time
from json.encoder import encode_basestring_ascii

LOGGER = "proxy.access"

_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))  # proxy.logs' encoder: the rare other values
_quote = encode_basestring_ascii  # what that encoder (ensure_ascii) does with every str
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def json_value(value: object) -> str:
    """``value`` as the logs' JSON encoder writes it."""
    if type(value) is str:
        return _quote(value)
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _ENCODER.encode(value)


_PLAIN = re.compile(r"[^\s\"'=]+")  # \s: the characters str.isspace() is true for


def text_value(value: object) -> str:
    """``value`` in the text format: as it is, or quoted (``repr``) when empty or when it holds whitespace, a
    quote or ``=`` (so one value cannot pass for several fields)."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else repr(text)


#: What :meth:`AccessLine.parts` prepares: the line's text from after ``ts`` through ``duration_ms``'s name,
#: from ``bytes`` through ``remote``'s name, and the ``route``/``outcome``/``key`` fields.
Parts = tuple[str, str, str]


class AccessLine:
    """Formats one access line in ``fmt`` (``json`` or ``text``) for a process (``worker``: its index with
    ``--workers N``, else None).

    :meth:`format` takes the access logger's fields; ``route`` None means the request has no telemetry note
    (no ``route``, ``outcome`` or ``key``; ``-`` in ``msg``). It is :meth:`line` of :meth:`parts`: what
    depends on the answer (method, path, status, size, route, outcome, key) and what differs per request
    (time, duration, remote address, request id, trace), so a caller may keep the parts of an answer it
    answers again."""

    __slots__ = ("_json", "_prefix", "_second", "_worker_json", "_worker_text")

    def __init__(self, fmt: str, worker: int | None = None) -> None:
        self._json = fmt == "json"
        self._second = -1
        self._prefix = ""
        self._worker_json = ("" if worker is None else ',"worker":' + json_value(worker)) + "}"
        self._worker_text = "" if worker is None else " worker=" + text_value(worker)

    def format(
        self,
        now: float,
        method: str,
        path: str,
        status: int,
        seconds: float,
        size: int,
        remote: str | None,
        request_id: str | None,
        route: str | None,
        outcome: str | None,
        key: str | None,
        trace: tuple[str, str] | None,
    ) -> str:
        """The line (without its newline) for a request logged at ``now`` (``time.time()``) that took
        ``seconds`` (``duration_ms``: rounded to 0.01 ms, as ``round(seconds * 1000, 2)``)."""
        parts = self.parts(method, path, status, size, route, outcome, key)
        return self.line(now, parts, seconds, remote, request_id, trace)

    def parts(
        self, method: str, path: str, status: int, size: int, route: str | None, outcome: str | None, key: str | None
    ) -> Parts:
        """The constant parts of the lines of an answer (see :meth:`format`)."""
        msg = f"{method} {path} {status:d} {'-' if route is None else outcome}"
        if self._json:
            if type(method) is str and type(path) is str and type(status) is int:
                head = (
                    f'","level":"info","logger":"{LOGGER}","msg":{_quote(msg)},"method":{_quote(method)},'
                    f'"path":{_quote(path)},"status":{status},"duration_ms":'
                )
            else:
                head = (
                    f'","level":"info","logger":"{LOGGER}","msg":{_quote(msg)},"method":{json_value(method)},'
                    f'"path":{json_value(path)},"status":{json_value(status)},"duration_ms":'
                )
            note = ""
            if route is not None:
                note = f',"route":{json_value(route)},"outcome":{json_value(outcome)}'
                if key is not None:
                    note += f',"key":{json_value(key)}'
            return head, f',"bytes":{json_value(size)},"remote":', note
        head = f" INFO {LOGGER} {msg}" + _pairs((("method", method), ("path", path), ("status", status)))
        note = "" if route is None else _pairs((("route", route), ("outcome", outcome), ("key", key)))
        return head, _pairs((("bytes", size),)), note

    def line(
        self,
        now: float,
        parts: Parts,
        seconds: float,
        remote: str | None,
        request_id: str | None,
        trace: tuple[str, str] | None,
    ) -> str:
        """The line of a request answered with ``parts`` (see :meth:`format`)."""
        second = int(now)  # what proxy.logs.timestamp renders for a LogRecord created at `now`
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        ts = self._prefix + _MILLIS[int((now - second) * 1000)]
        head, size, note = parts
        ms = seconds * 1000
        if type(ms) is float and 0.0 <= ms < 1e13:
            # repr(round(ms, 2)), for less: both round the same binary value to 2 decimals (the same dtoa), and
            # below 1e13 no shorter decimal is the same float, so repr writes those digits without a last 0
            duration = f"{ms:.2f}"
            if duration[-1] == "0":
                duration = duration[:-1]
        else:
            rounded = round(ms, 2)
            duration = json_value(rounded) if self._json else text_value(rounded)
        if self._json:
            ids = "" if trace is None else f',"trace_id":{json_value(trace[0])},"span_id":{json_value(trace[1])}'
            return (
                f'{{"ts":"{ts}{head}{duration}{size}{_quote(remote) if type(remote) is str else json_value(remote)}'
                f',"request_id":{"null" if request_id is None else json_value(request_id)}{note}{ids}'
                f"{self._worker_json}"
            )
        middle = (("remote", remote), ("request_id", request_id))
        ids = "" if trace is None else _pairs((("trace_id", trace[0]), ("span_id", trace[1])))
        return f"{ts}{head} duration_ms={duration}{size}{_pairs(middle)}{note}{ids}{self._worker_text}"


def _pairs(fields: tuple[tuple[str, object], ...]) -> str:
    """`` name=value`` for each field whose value is not None (the text format)."""
    return "".join([f" {name}={text_value(value)}" for name, value in fields if value is not None])

"""The access line formatted directly (proxy.accessline) is the line the logging path renders, byte for byte."""

from __future__ import annotations

import itertools
import json
import logging
import random
from typing import Any
from unittest import mock

import pytest

from proxy.accessline import AccessLine, json_value, text_value
from proxy.logs import JsonFormatter, TextFormatter, _WorkerFilter

NOW = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z
TRACE = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
KEY = "d41d8cd98f00b204e9800998ecf8427e"


def _logged(fmt: str, now: float, worker: int | None, **fields: Any) -> str:
    """What the logging path writes for these fields (``AccessLogger``'s record, the configured formatter)."""
    extra: dict[str, Any] = {
        "method": fields["method"],
        "path": fields["path"],
        "status": fields["status"],
        "duration_ms": round(fields["seconds"] * 1000, 2),
        "bytes": fields["size"],
        "remote": fields["remote"],
        "request_id": fields["request_id"],
    }
    if fields["route"] is not None:
        extra["route"], extra["outcome"] = fields["route"], fields["outcome"]
        if fields["key"] is not None:
            extra["key"] = fields["key"]
    if fields["trace"] is not None:
        extra["trace_id"], extra["span_id"] = fields["trace"]
    args = (fields["method"], fields["path"], fields["status"], "-" if fields["route"] is None else fields["outcome"])
    with mock.patch("time.time", return_value=now):
        record = logging.getLogger("proxy.access").makeRecord(
            "proxy.access", logging.INFO, __file__, 1, "%s %s %d %s", args, None, extra=extra
        )
    if worker is not None:
        _WorkerFilter(worker).filter(record)
    return (JsonFormatter() if fmt == "json" else TextFormatter()).format(record)


def _direct(fmt: str, now: float, worker: int | None, **fields: Any) -> str:
    return AccessLine(fmt, worker).format(
        now,
        fields["method"],
        fields["path"],
        fields["status"],
        fields["seconds"],
        fields["size"],
        fields["remote"],
        fields["request_id"],
        fields["route"],
        fields["outcome"],
        fields["key"],
        fields["trace"],
    )


BASE: dict[str, Any] = {
    "method": "GET",
    "path": "/api/v2/dags/one",
    "status": 200,
    "seconds": 0.000612,
    "size": 900,
    "remote": "10.0.3.7",
    "request_id": None,
    "route": "api.dag",
    "outcome": "HIT",
    "key": KEY,
    "trace": None,
}
VARIANTS: list[dict[str, Any]] = [
    {},
    {"request_id": "f3b5c2a1d4e6f7a8b9c0d1e2f3a4b5c6", "trace": TRACE},
    {"route": None, "outcome": None, "key": None},  # no telemetry note
    {"outcome": None},  # a note without an outcome: "None" in msg, null / left out
    {"key": None, "outcome": "MISS"},
    {"status": 304, "outcome": "304", "size": 250},
    {"remote": None},
    {"remote": "::1"},
    {"method": "POST", "route": "passthrough", "outcome": "BYPASS", "key": None, "status": 502},
    {"path": '/api/v2/dags/caf\u00e9 "quoted" a=b\\c\ttab\nline'},  # non-ASCII, quotes, =, backslash, controls
    {"path": "/ui/\U0001f600/\x00/\u2028"},
    {"path": ""},
    {"seconds": 0.0},
    {"seconds": 0.000005},  # rounds to 0.01 ms
    {"seconds": 0.000004999},  # to 0.0
    {"seconds": 0.012345},
    {"seconds": 12.3456789},
    {"seconds": 3600.0},
    {"size": 0},
]


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("worker", [None, 3])
@pytest.mark.parametrize("variant", VARIANTS, ids=range(len(VARIANTS)))
def test_the_direct_line_is_the_logged_line(fmt: str, worker: int | None, variant: dict[str, Any]) -> None:
    fields = {**BASE, **variant}
    assert _direct(fmt, NOW, worker, **fields) == _logged(fmt, NOW, worker, **fields)


def test_json_fields_in_order() -> None:
    line = _direct("json", NOW, 2, **{**BASE, "request_id": "r-1", "trace": TRACE})
    assert line == (
        '{"ts":"2026-01-01T00:00:00.250Z","level":"info","logger":"proxy.access","msg":"GET /api/v2/dags/one 200 HIT",'
        '"method":"GET","path":"/api/v2/dags/one","status":200,"duration_ms":0.61,"bytes":900,"remote":"10.0.3.7",'
        '"request_id":"r-1","route":"api.dag","outcome":"HIT","key":"d41d8cd98f00b204e9800998ecf8427e",'
        '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","worker":2}'
    )


def test_text_fields_without_a_value_are_left_out() -> None:
    line = _direct("text", NOW, None, **{**BASE, "remote": None, "path": "/a b"})
    assert line == (
        "2026-01-01T00:00:00.250Z INFO proxy.access GET /a b 200 HIT method=GET path='/a b' status=200 "
        "duration_ms=0.61 bytes=900 route=api.dag outcome=HIT key=d41d8cd98f00b204e9800998ecf8427e"
    )


def test_timestamps_across_seconds_and_milliseconds() -> None:
    """The cached date and time of day changes with the second; milliseconds are truncated as LogRecord does."""
    line = AccessLine("json")
    starts = [NOW - 0.25 + offset for offset in (0.0, 0.0009, 0.001, 0.4999, 0.999, 0.9999999, 1.0, 86_399.9995)]
    rng = random.Random(7)
    moments = starts + [NOW + rng.uniform(0, 400_000_000) for _ in range(2000)]
    for now in moments + sorted(moments) + moments[::-1]:
        direct = json.loads(line.format(now, "GET", "/", 200, 0.001, 1, None, None, None, None, None, None))
        logged = json.loads(_logged("json", now, None, **{**BASE, "route": None, "seconds": 0.001}))
        assert direct["ts"] == logged["ts"], now


def test_duration_is_round_to_two_decimals() -> None:
    """``duration_ms`` is written as ``round(seconds * 1000, 2)`` is, for any duration (a faster route to it)."""
    rng = random.Random(11)
    samples = [rng.uniform(0, 0.01) for _ in range(20_000)] + [rng.uniform(0, 120) for _ in range(20_000)]
    samples += [k / 200_000 for k in range(20_000)]  # halves of 0.01 ms
    samples += [1e-9, 5e-6, 4.999999e-6, 0.0, -0.0, 1e9, 1e12, float("inf"), float("nan")]
    line = AccessLine("json")
    for seconds in samples:
        got = json.loads(line.format(NOW, "GET", "/", 200, seconds, 1, None, None, None, None, None, None))
        expected = round(seconds * 1000, 2)
        assert got["duration_ms"] == expected or (expected != expected and got["duration_ms"] != got["duration_ms"])
        text = AccessLine("text").format(NOW, "GET", "/", 200, seconds, 1, None, None, None, None, None, None)
        assert f" duration_ms={text_value(expected)} " in text, seconds


def test_unusual_types_are_written_as_the_json_encoder_writes_them() -> None:
    assert [json_value(v) for v in ("é", None, 7, 0.5, True, float("inf"), 2**70)] == [
        '"\\u00e9"',
        "null",
        "7",
        "0.5",
        "true",
        "Infinity",
        str(2**70),
    ]
    fields = {**BASE, "status": True, "size": 1.5, "remote": 42}  # not what aiohttp passes, still the same line
    assert _direct("json", NOW, None, **fields) == _logged("json", NOW, None, **fields)


def _former_text_value(value: object) -> str:
    text = str(value)
    return text if text and not any(c.isspace() or c in "\"'=" for c in text) else repr(text)


def test_text_values_are_quoted_as_before_for_every_character() -> None:
    for start in range(0, 0x110000, 4096):
        chunk = [chr(c) for c in range(start, start + 4096) if not 0xD800 <= c < 0xE000]
        for c in chunk:
            assert text_value(c) == _former_text_value(c), hex(ord(c))
            assert text_value("a" + c + "b") == _former_text_value("a" + c + "b"), hex(ord(c))
    for value in ("", "plain", "a b", "a=b", "it's", 'say "x"', 0, None, 1.25, "\u00a0"):
        assert text_value(value) == _former_text_value(value)


def test_parts_are_shared_by_the_lines_of_one_answer() -> None:
    line = AccessLine("json")
    parts = line.parts("GET", "/api/v2/dags/one", 200, 900, "api.dag", "HIT", KEY)
    for seconds, remote, request_id, trace in itertools.product(
        (0.0001, 0.5), (None, "10.0.0.1"), (None, "r-1"), (None, TRACE)
    ):
        assert line.line(NOW, parts, seconds, remote, request_id, trace) == line.format(
            NOW, "GET", "/api/v2/dags/one", 200, seconds, 900, remote, request_id, "api.dag", "HIT", KEY, trace
        )

"""Log lines (structlog through the stdlib) and the correlation ids of the access log."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
import structlog

from proxy.config import LogConfig
from proxy.correlation import MAX_REQUEST_ID, request_id, trace_ids
from proxy.logs import JsonFormatter, TextFormatter
from tests.unit.conftest import install_logging

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
AWS_ID = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8"


def _record(msg: str = "GET %s", *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "proxy.access", "levelno": logging.INFO, "levelname": "INFO", "msg": msg, "args": args, **extra}
    )
    record.created, record.msecs = 1_767_225_600.25, 250.0  # 2026-01-01T00:00:00.250Z
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


def test_json_line_fields_in_order():
    line = JsonFormatter().format(_record("GET %s", "/api", route="api.dag", status=200, _private=1))
    assert line == (
        '{"ts":"2026-01-01T00:00:00.250Z","level":"info","logger":"proxy.access","msg":"GET /api",'
        '"route":"api.dag","status":200}'
    )


def test_json_exception_is_one_string_field_last():
    data = json.loads(JsonFormatter().format(_record("failed", exc=True, worker=2)))
    assert list(data) == ["ts", "level", "logger", "msg", "worker", "exc"]
    assert data["exc"].startswith("Traceback (most recent call last):") and data["exc"].endswith("ValueError: boom")


def test_json_values_that_are_not_json_become_strings():
    assert json.loads(JsonFormatter().format(_record("x", path=Path("/x"))))["path"] == "/x"


def test_text_line_for_humans():
    line = TextFormatter().format(_record("GET %s", "/api", route="api.dag", remote="a b", request_id=None))
    assert line == "2026-01-01T00:00:00.250Z INFO proxy.access GET /api route=api.dag remote='a b'"
    text = TextFormatter().format(_record("failed", exc=True))
    assert text.startswith("2026-01-01T00:00:00.250Z INFO proxy.access failed\nTraceback")


def test_stdlib_and_structlog_loggers_write_the_same_lines(captured: io.StringIO):
    install_logging(captured, LogConfig(level="info"), worker=1)
    logging.getLogger("proxy.upstream").warning("upstream failed: %s", "GET /x", extra={"status": 502})
    structlog.get_logger("proxy.versions").info("polled", dags=3)
    structlog.get_logger("proxy.versions").debug("below the level")
    logging.getLogger("proxy.versions").debug("below the level")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [{k: v for k, v in line.items() if k != "ts"} for line in lines] == [
        {"level": "warning", "logger": "proxy.upstream", "msg": "upstream failed: GET /x", "status": 502, "worker": 1},
        {"level": "info", "logger": "proxy.versions", "msg": "polled", "worker": 1, "dags": 3},
    ]


def test_level_and_access_log_switch(captured: io.StringIO):
    install_logging(captured, LogConfig(level="warning", format="text", access_log=False))
    logging.getLogger("proxy.access").warning("not written: the access log is off")
    logging.getLogger("proxy.x").info("not written: below the level")
    logging.getLogger("proxy.x").error("written")
    assert captured.getvalue().splitlines()[0].endswith(" ERROR proxy.x written")
    assert len(captured.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("f3b5c2a1d4e6f7a8b9c0d1e2f3a4b5c6", "f3b5c2a1d4e6f7a8b9c0d1e2f3a4b5c6"),  # ingress-nginx $req_id
        ("0b6e9a8e-4f7c-4a3f-9a1e-2f6c3d4b5a69", "0b6e9a8e-4f7c-4a3f-9a1e-2f6c3d4b5a69"),
        (AWS_ID, AWS_ID),  # ";" and "=" allowed
        ("x" * MAX_REQUEST_ID, "x" * MAX_REQUEST_ID),
        ("x" * (MAX_REQUEST_ID + 1), None),
        ("", None),
        (None, None),
        ("id with spaces", None),
        ('id"quoted', None),
        ("id\u00e9", None),
    ],
)
def test_request_id_is_logged_only_when_short_and_safe(value: str | None, expected: str | None):
    assert request_id(value) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([TRACEPARENT], ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        ([TRACEPARENT.replace("-01", "-00")], ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        (["01" + TRACEPARENT[2:] + "-future-field"], ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        ([], None),
        ([TRACEPARENT, TRACEPARENT], None),  # repeated: invalid
        ([TRACEPARENT + "-extra"], None),  # version 00 has exactly four fields
        (["01" + TRACEPARENT[2:] + "x"], None),  # a later version's extra fields start with "-"
        (["ff" + TRACEPARENT[2:]], None),
        ([TRACEPARENT.upper()], None),
        (["00-" + "0" * 32 + "-00f067aa0ba902b7-01"], None),
        (["00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"], None),
        (["00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"], None),
        (["garbage"], None),
    ],
)
def test_trace_ids_from_a_valid_traceparent_only(values: list[str], expected: tuple[str, str] | None):
    assert trace_ids(values) == expected

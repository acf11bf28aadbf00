"""Access lines in batches (proxy.accessbuffer) and the logging that writes them (proxy.logs): one write per
batch, nothing lost or reordered, bounded, in order with the other log lines; the hit lane's lines equal the
full path's."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy import accessbuffer, logs
from proxy.accessbuffer import AccessBuffer
from proxy.config import LogConfig
from proxy.hitwire import LaneAnswer
from proxy.logs import AccessLogger
from proxy.metrics import NOTE, RequestNote
from tests.unit.conftest import install_logging

ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'
TOKEN = "eyJhbGciOiJIUzUxMiJ9.c2VjcmV0LXRva2Vu.c2ln"


class Writes:
    def __init__(self) -> None:
        self.batches: list[str] = []

    def __call__(self, text: str) -> None:
        self.batches.append(text)

    @property
    def lines(self) -> list[str]:
        return "".join(self.batches).splitlines()


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes)
    buffer.add("one")
    buffer.add("two")
    assert writes.batches == ["one\n", "two\n"] and len(buffer) == 0


async def test_a_burst_is_one_write_after_the_interval() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes, interval=0.05)
    for i in range(500):
        buffer.add(f"line {i}")
    assert writes.batches == []  # kept
    await asyncio.sleep(0.2)
    assert len(writes.batches) == 1 and writes.lines == [f"line {i}" for i in range(500)]
    buffer.add("later")
    await asyncio.sleep(0.2)
    assert writes.batches[1:] == ["later\n"]  # the timer is armed again for the next batch


async def test_a_full_batch_is_written_at_once_so_memory_stays_bounded() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes, interval=3600, limit=1000)
    line = "x" * 99  # 100 characters with its newline
    for _ in range(10_000):
        buffer.add(line)
        assert len(buffer) < 10
    assert len(writes.batches) == 1000 and all(batch == (line + "\n") * 10 for batch in writes.batches)
    buffer.close()


async def test_close_writes_what_is_kept_and_forgets_the_timer() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes, interval=3600)
    buffer.add("kept")
    buffer.close()
    assert writes.batches == ["kept\n"]
    buffer.add("after")  # a new timer, on this loop
    buffer.close()
    assert writes.lines == ["kept", "after"]


async def test_flushes_from_another_thread_lose_and_reorder_nothing() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes, interval=3600, limit=10**9)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            buffer.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(200_000):
            buffer.add(str(i))
    finally:
        stop.set()
        thread.join()
    buffer.close()
    assert writes.lines == [str(i) for i in range(200_000)]
    assert buffer.lines == 200_000 and buffer.batches == len(writes.batches)


async def test_deferred_lines_are_rendered_when_the_batch_is_written_in_their_place() -> None:
    writes = Writes()
    rendered: list[int] = []

    def render(i: int) -> str:
        rendered.append(i)
        return f"deferred {i}"

    buffer = AccessBuffer(writes, interval=3600)
    buffer.add("first")
    buffer.defer(render, (1,))
    buffer.add("third")
    buffer.defer(render, (2,))
    assert rendered == [] and writes.batches == []
    buffer.close()
    assert writes.batches == ["first\ndeferred 1\nthird\ndeferred 2\n"] and rendered == [1, 2]


async def test_deferred_lines_are_bounded_too() -> None:
    writes = Writes()
    buffer = AccessBuffer(writes, interval=3600)
    for i in range(3 * accessbuffer.FLUSH_DEFERRED):
        buffer.defer(str, (i,))
        assert len(buffer) < accessbuffer.FLUSH_DEFERRED
    assert [len(batch.splitlines()) for batch in writes.batches] == [accessbuffer.FLUSH_DEFERRED] * 3
    assert writes.lines == [str(i) for i in range(3 * accessbuffer.FLUSH_DEFERRED)]


async def test_a_line_that_cannot_be_rendered_is_left_out_and_reported() -> None:
    writes = Writes()
    failures: list[Exception] = []
    buffer = AccessBuffer(writes, interval=3600, failed=failures.append)

    def broken() -> str:
        raise AttributeError("no such field")

    buffer.add("before")
    buffer.defer(broken, ())
    buffer.add("after")
    buffer.close()
    assert writes.lines == ["before", "after"] and [type(exc) for exc in failures] == [AttributeError]


def test_the_interval_is_read_when_a_buffer_is_made() -> None:
    with mock.patch.object(accessbuffer, "FLUSH_INTERVAL", 7.0), mock.patch.object(accessbuffer, "FLUSH_CHARS", 9):
        buffer = AccessBuffer(Writes())
    assert (buffer._interval, buffer._limit) == (7.0, 9)


# ----- through proxy.logs ----------------------------------------------------------------------------------------


def _answer(outcome: str = "HIT") -> LaneAnswer:
    status = 304 if outcome == "304" else 200
    body = b"" if status == 304 else b'{"dag_id":"one"}'
    head = f"HTTP/1.1 {status} OK\r\nETag: {ETAG}\r\nContent-Length: {len(body)}\r\n".encode()
    return LaneAnswer(head, body, status, "api.dag", outcome, ETAG)


def _full_path(answer: LaneAnswer, tail: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
    """The same request and answer as the full path hands them to the access logger."""
    request = make_mocked_request("GET", "/api/v2/dags/one?token=" + TOKEN, headers=headers).clone(remote="10.0.0.9")
    request[NOTE] = RequestNote(answer.route, outcome=answer.outcome, key=answer.etag)
    response = web.Response(status=answer.status)
    response._body_length = len(answer.head) + len(tail) + len(answer.body)
    return request, response


HEADERS = [
    {"Authorization": f"Bearer {TOKEN}"},
    {
        "Authorization": f"Bearer {TOKEN}",
        "X-Request-Id": "req-1",
        "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
    },
    {"X-Request-Id": 'forged" "level":"error', "traceparent": "00-x"},
]


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_the_lane_and_the_full_path_write_the_same_line(captured: io.StringIO, fmt: str) -> None:
    handler = install_logging(captured, LogConfig(level="info", format=cast(Any, fmt)), worker=1)
    access = AccessLogger(logging.getLogger("proxy.access"), "")
    assert access._handler is handler  # the direct route: no LogRecord
    tail = b"Date: Sat, 05 Dec 2026 20:41:26 GMT\r\nServer: x\r\n\r\n"
    for headers, outcome in zip(HEADERS * 2, ["HIT", "HIT", "HIT", "304", "304", "304"], strict=True):
        answer = _answer(outcome)
        request, response = _full_path(answer, tail, headers)
        with mock.patch("proxy.logs._now", return_value=1_767_225_600.25):
            access.log_lane(request._message, answer, tail, "10.0.0.9", 0.000123)
            access.log_lane(request._message, answer, tail, "10.0.0.9", 0.000123)  # its parts kept
            access.log(request, response, 0.000123)
            # and the line through logging (an AccessLogger whose line is not written directly)
            with mock.patch("time.time", return_value=1_767_225_600.25):
                access._log_record(request, response, 0.000123)
    handler.flush()
    lines = captured.getvalue().splitlines()
    assert len(lines) == 24 and len(handler.lane_parts) == 1
    for quad in range(0, 24, 4):
        assert len(set(lines[quad : quad + 4])) == 1, lines[quad : quad + 4]
    assert TOKEN not in captured.getvalue() and "forged" not in captured.getvalue()
    if fmt == "json":
        parsed = [json.loads(line) for line in lines]
        assert {line["outcome"] for line in parsed} == {"HIT", "304"} and {line["worker"] for line in parsed} == {1}
        assert parsed[4]["request_id"] == "req-1" and parsed[4]["trace_id"] == "ab" * 16


async def test_access_lines_stay_in_order_with_other_lines(captured: io.StringIO) -> None:
    handler = install_logging(captured, LogConfig(level="info"))
    access = AccessLogger(logging.getLogger("proxy.access"), "")
    answer = _answer()
    request, _ = _full_path(answer, b"\r\n", {})
    access.log_lane(request._message, answer, b"\r\n", None, 0.001)
    access.log_lane(request._message, answer, b"\r\n", None, 0.001)
    assert captured.getvalue() == ""  # kept for the batch
    logging.getLogger("proxy.upstream").warning("after two requests")
    structlog.get_logger("proxy.versions").info("and a structlog line")
    access.log_lane(request._message, answer, b"\r\n", None, 0.001)
    logs.flush()  # as serve_proxy does at shutdown
    loggers = [json.loads(line)["logger"] for line in captured.getvalue().splitlines()]
    assert loggers == ["proxy.access", "proxy.access", "proxy.upstream", "proxy.versions", "proxy.access"]
    assert handler.access.batches == 2


async def test_logging_shutdown_writes_what_is_kept(captured: io.StringIO) -> None:
    """What runs at interpreter exit (``logging.shutdown``, registered with atexit) flushes the batch."""
    handler = install_logging(captured, LogConfig(level="info"))
    access = AccessLogger(logging.getLogger("proxy.access"), "")
    answer = _answer()
    request, _ = _full_path(answer, b"\r\n", {})
    access.log_lane(request._message, answer, b"\r\n", None, 0.001)
    logging.shutdown([lambda: handler])
    assert json.loads(captured.getvalue())["logger"] == "proxy.access"


def test_other_handlers_get_access_lines_through_logging(captured: io.StringIO) -> None:
    """With a handler other than the one configure() installed (an embedding application, a test's caplog)
    access lines are records, as before."""
    install_logging(captured, LogConfig(level="info"))
    extra = logging.Handler()
    for add, remove in (
        (logging.getLogger().addHandler, logging.getLogger().removeHandler),
        (logging.getLogger("proxy.access").addHandler, logging.getLogger("proxy.access").removeHandler),
        (logging.getLogger("proxy").addHandler, logging.getLogger("proxy").removeHandler),
    ):
        add(extra)
        try:
            assert AccessLogger(logging.getLogger("proxy.access"), "")._handler is None
        finally:
            remove(extra)
    assert AccessLogger(logging.getLogger("proxy.access"), "")._handler is not None
    assert AccessLogger(logging.getLogger("other.access"), "")._handler is None


def test_a_batch_that_cannot_be_written_is_dropped_and_reported(
    captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = install_logging(captured, LogConfig(level="info"))
    broken = io.StringIO()
    broken.close()
    handler.stream = broken
    handler.access.add("a line")  # no loop: written (attempted) at once
    assert handler.access_lost == 1 and len(handler.access) == 0
    assert "a batch of access lines was lost" in capsys.readouterr().err


def test_a_line_that_cannot_be_rendered_is_reported(captured: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    handler = install_logging(captured, LogConfig(level="info"))
    access = AccessLogger(logging.getLogger("proxy.access"), "")
    request, _ = _full_path(_answer(), b"\r\n", {})
    access.log(request, cast(Any, SimpleNamespace(status="not a number", body_length=1)), 0.001)
    handler.flush()
    assert handler.access_lost == 1 and captured.getvalue() == ""
    assert "an access line could not be rendered" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "limit"),
    [
        (["a" * 10] * 3, 100),  # fits: one piece
        (["a" * 10] * 30, 33),  # 3 lines of 11 bytes a piece
        (["a" * 10, "b" * 50, "c" * 10], 20),  # a line longer than the limit is a piece of its own
        (["\u00e9" * 10] * 4, 25),  # 21 bytes in UTF-8 (11 characters) a line
        ([str(i) * (i % 97 + 1) for i in range(2000)], 4096),
    ],
)
def test_pieces_are_whole_lines_within_the_limit(lines: list[str], limit: int) -> None:
    text = "".join(line + "\n" for line in lines)
    found = accessbuffer.pieces(text, limit)
    assert "".join(found) == text
    for piece in found:
        assert piece.endswith("\n")
        assert len(piece.encode()) <= limit or piece.count("\n") == 1


class _PipeSpy(io.StringIO):
    """A text stream on a pipe (for ``fstat``) that records each write."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.writes: list[str] = []

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


@pytest.mark.parametrize(("shared", "pipe"), [(True, True), (False, True), (True, False)])
async def test_workers_write_to_a_pipe_in_pieces_the_kernel_keeps_whole(
    captured: io.StringIO, tmp_path: Path, shared: bool, pipe: bool
) -> None:
    handler = install_logging(captured, LogConfig(level="info"), worker=0 if shared else None)
    read, write = os.pipe()
    file = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    try:
        spy = _PipeSpy(write if pipe else file)
        handler.setStream(spy)
        lines = [f"line {i} " + "x" * 200 for i in range(100)]  # 21 KB: one batch
        for line in lines:
            handler.access.add(line)
        handler.flush()
    finally:
        for fd in (read, write, file):
            os.close(fd)
    assert "".join(spy.writes).splitlines() == lines
    if shared and pipe:
        assert len(spy.writes) == 6 and all(len(piece) <= 4096 and piece.endswith("\n") for piece in spy.writes)
    else:
        assert len(spy.writes) == 1

"""What one access line costs: best of ``--repeat`` x ``--number`` calls of the access logger.

The logging of a real ``dagcache serve`` process (``proxy.logs.configure``), stderr pointed at ``--to``
(``/dev/null`` by default), calls made from inside a running uvloop loop as the server makes them (so buffered
lines are written whenever a batch fills, as in a busy worker, and what is left at the end of a repeat). Cases:

* a hit answered by the hit lane, as the lane hands it to the access logger (``AccessLogger.log_lane``; on a
  tree before it, ``LaneRequest``/``LaneResponse`` and ``AccessLogger.log``), the same request every time;
* the same with an ``X-Request-Id`` and a ``traceparent`` (three more fields);
* the same hit on aiohttp's full path (``AccessLogger.log`` with aiohttp's ``Request`` and a response), with and
  without the two headers;
* the lane's hit in the text format.

    python -m bench.access_log [--number 20000] [--repeat 5] [--to /dev/null]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import uvloop
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy import logs
from proxy.config import LogConfig
from proxy.hitlane import LaneRequest, LaneResponse
from proxy.hitwire import LaneAnswer
from proxy.metrics import NOTE, RequestNote

PATH = "/api/v2/dags/example_dag"
ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'
IDS = {"X-Request-Id": "f3b5c2a1d4e6f7a8b9c0d1e2f3a4b5c6", "traceparent": "00-" + "4bf9" * 8 + "-00f067aa0ba902b7-01"}
AUTH = {"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.e30.c2ln", "Accept-Encoding": "gzip"}
TAIL = b"Date: Sat, 05 Dec 2026 20:41:26 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n"
ANSWER = LaneAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n", b"x" * 900, 200, "api.dag", "HIT", ETAG)

Call = Callable[[logs.AccessLogger], None]


def lane_call(headers: dict[str, str]) -> Call:
    """A hit as the lane hands it to the access logger."""
    message = make_mocked_request("GET", PATH, headers={**AUTH, **headers})._message

    def call(access: logs.AccessLogger) -> None:
        if hasattr(access, "log_lane"):
            access.log_lane(message, ANSWER, TAIL, "10.0.3.7", 0.000612)
        else:  # the lane before log_lane
            request = cast(web.BaseRequest, LaneRequest(message, ANSWER, "10.0.3.7"))
            access.log(request, cast(web.StreamResponse, LaneResponse(ANSWER, TAIL)), 0.000612)

    return call


def full_call(headers: dict[str, str]) -> Call:
    """The same hit as aiohttp's full path hands it over (a ``Request`` with the note, a response)."""
    request = make_mocked_request("GET", PATH, headers={**AUTH, **headers}).clone(remote="10.0.3.7")
    request[NOTE] = RequestNote("api.dag", outcome="HIT", key=ETAG)
    response = web.Response(body=ANSWER.body)
    response._body_length = len(ANSWER.head) + len(TAIL) + len(ANSWER.body)  # what aiohttp counts once written

    def call(access: logs.AccessLogger) -> None:
        access.log(request, response, 0.000612)

    return call


async def best_per_call(call: Callable[[], None], number: int, repeat: int) -> float:
    """Seconds per call, best of ``repeat``, timed inside the running loop, with the write of what is still
    buffered at the end (the flush timer has no time to run inside a repeat)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        for handler in logging.getLogger().handlers:
            handler.flush()
        best = min(best, time.perf_counter() - started)
        await asyncio.sleep(0.2)
    return best / number


async def measure(number: int, repeat: int) -> dict[str, float]:
    results: dict[str, float] = {}
    cases: dict[str, tuple[str, Call]] = {
        "hit lane, json": ("json", lane_call({})),
        "hit lane + request id + traceparent, json": ("json", lane_call(IDS)),
        "full path, json": ("json", full_call({})),
        "full path + request id + traceparent, json": ("json", full_call(IDS)),
        "hit lane, text": ("text", lane_call({})),
    }
    for name, (fmt, call) in cases.items():
        logs.configure(LogConfig(level="info", format=cast(Any, fmt), access_log=True))
        access = logs.AccessLogger(logging.getLogger("proxy.access"), "")
        assert access.enabled
        results[name] = await best_per_call(functools.partial(call, access), number, repeat)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access_log", description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--to", default=os.devnull, help="where stderr (the log) goes while measuring")
    args = parser.parse_args(argv)
    report = os.fdopen(os.dup(1), "w")
    saved = os.dup(2)
    target = os.open(args.to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 2)
    try:
        results = uvloop.run(measure(args.number, args.repeat))
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
    for name, seconds in results.items():
        print(f"{seconds * 1e6:6.2f} µs per line  {name}", file=report)
    report.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The hit lane: plain ``GET`` hits answered from the connection's parser, without aiohttp's request machinery.

aiohttp turns every request into a ``Request``, a task, a router lookup, a ``Response`` and a header
serialization; for a hit that is most of the cost (``bench/hit_nginx.py``). The lane sits in
:class:`proxy.server._ProxyRequestHandler`'s ``data_received``, after aiohttp's own parser (the same llhttp
parser and limits as every request: framing is exactly as strict as on the full path, because it *is* the
full path's parser) and before aiohttp's request queue. For each parsed message, while the connection is idle
(no request queued or in progress, writes not paused), :meth:`HitLane.answer` asks the cache layer for an
answer that needs no I/O (:meth:`proxy.caching.CacheLayer.lane_answer`); the connection writes it at once.
Everything else, and every message after it on that connection until aiohttp is idle again, goes to aiohttp
unchanged, so pipelined answers stay in order.

What the lane takes: ``GET``, HTTP/1.1, keep-alive, no upgrade, no body framing headers (``Content-Length``,
``Transfer-Encoding``) and no ``Expect``, an origin-form target, within the size limits of
:func:`proxy.limits.check_request`. What it answers: what the full path answers — the same decision memo,
credential checks (expiry, revocation via the version map), ETag/304, ``Accept-Encoding`` negotiation, headers
(``X-Cache``, ``X-Dagcache-Generation``, ``Vary``), cache counters, request metrics and access-log line.

``[server] hit_lane = false`` turns it off.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import hdrs
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.hitwire import LaneAnswer, serialize_tail
from proxy.limits import Limits
from proxy.metrics import NOTE, RequestNote, Telemetry

if TYPE_CHECKING:
    from proxy.caching import CacheLayer


def plain_get(message: RawRequestMessage) -> bool:
    """Whether the lane may answer ``message``: a keep-alive HTTP/1.1 GET of an origin-form target, without a
    body, an upgrade or an ``Expect``."""
    if message.method != "GET" or message.version != HttpVersion11 or message.should_close:
        return False
    if message.upgrade or message.chunked or message.path[:1] != "/":
        return False
    headers = message.headers
    return hdrs.CONTENT_LENGTH not in headers and hdrs.TRANSFER_ENCODING not in headers and hdrs.EXPECT not in headers


class HitLane:
    """The lane's decisions for one process: which messages it answers, with which bytes."""

    def __init__(self, layer: CacheLayer, telemetry: Telemetry, limits: Limits) -> None:
        self._layer = layer
        self._telemetry = telemetry
        self._max_url = limits.max_url_length
        self._max_count = limits.max_header_count
        self._max_size = limits.max_header_size
        self._second = -1
        self.answered = 0  # requests the lane answered (they are in the request metrics like any other)
        self.tail = b""
        """``Date`` and ``Server`` as aiohttp writes them, and the blank line: refreshed by :meth:`answer`."""

    def answer(self, message: RawRequestMessage) -> LaneAnswer | None:
        """The answer to ``message``, or None: aiohttp handles it (and it is counted there)."""
        if not plain_get(message):
            return None
        path = message.path
        raw_headers = message.raw_headers
        if len(path) > self._max_url or len(raw_headers) > self._max_count:
            return None  # the full path rejects it (proxy.limits)
        size = 0
        for name, value in raw_headers:
            size += len(name) + len(value) + 4
        if size > self._max_size:
            return None  # maybe rejected: proxy.limits counts characters, never more than these bytes
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self.tail = serialize_tail(rfc822_formatted_time(), SERVER_SOFTWARE)
        return self._layer.lane_answer(path, message.headers, now)

    def record(self, answer: LaneAnswer, seconds: float) -> None:
        """Count the answer as :meth:`proxy.metrics.Telemetry.finish` counts one of the full path."""
        self.answered += 1
        self._telemetry.request(answer.route, answer.outcome, answer.status, seconds, len(answer.body))


class LaneRequest:
    """What the access logger reads from a request, for one answered by the lane (it has no aiohttp
    ``Request``): method, path (decoded, no query), headers, remote address and the telemetry note."""

    __slots__ = ("_message", "_note", "remote")

    def __init__(self, message: RawRequestMessage, answer: LaneAnswer, remote: str | None) -> None:
        self._message = message
        self._note = RequestNote(answer.route, outcome=answer.outcome, key=answer.etag)
        self.remote = remote

    @property
    def method(self) -> str:
        return self._message.method

    @property
    def path(self) -> str:
        return self._message.url.path

    @property
    def raw_path(self) -> str:
        return self._message.path

    @property
    def version(self) -> object:
        return self._message.version

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._message.headers

    def get(self, key: object, default: object = None) -> object:
        return self._note if key is NOTE else default

    def __getitem__(self, key: object) -> object:
        if key is NOTE:
            return self._note
        raise KeyError(key)


class LaneResponse:
    """What the access logger reads from a response the lane wrote."""

    __slots__ = ("_answer", "body_length", "status")

    def __init__(self, answer: LaneAnswer, tail: bytes) -> None:
        self._answer = answer
        self.status = answer.status
        self.body_length = len(answer.head) + len(tail) + len(answer.body)  # aiohttp's: every byte written

    @property
    def content_length(self) -> int | None:
        return None if self.status == 304 else len(self._answer.body)

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The headers as written (parsed back from the head; ``Date`` and ``Server`` are not in it)."""
        lines = self._answer.head.decode("utf-8").split("\r\n")[1:]
        pairs = [line.partition(": ") for line in lines if line]
        return CIMultiDictProxy(CIMultiDict((name, value) for name, _, value in pairs))

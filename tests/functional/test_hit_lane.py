"""The hit lane (proxy.hitlane) over real sockets: the same bytes, order, framing errors, keep-alive, metrics and
access log as the full aiohttp path, against the stand-in upstream, real Redis and an Airflow-3-shaped SQLite DB.

Each comparison sends the same raw request twice to one proxy: on a connection opened with the lane off
(``server.lane = None``: aiohttp's full path) and on one opened with it on, and compares what comes back
byte for byte but for the ``Date`` header. ``lane.answered`` tells which path answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, insert

from proxy.airflow import schema
from proxy.hitlane import HitLane
from proxy.server import _ProxyServer
from tests.conftest import UpstreamServer
from tests.functional.observability import Stack, airflow_db, bearer, scrape, table, until

pytestmark = pytest.mark.functional

DAG = "/api/v2/dags/dag_a"
TASKS = "/api/v2/dags/dag_a/tasks"
TOKEN = bearer()["Authorization"]


@dataclass(frozen=True)
class Answer:
    status: int
    head: bytes  # status line and headers, Date removed
    body: bytes

    def header(self, name: str) -> str | None:
        found = re.search(rb"(?im)^" + re.escape(name.encode()) + rb": ([^\r]*)\r$", self.head)
        return found.group(1).decode() if found else None


class Conn:
    """One raw HTTP/1.1 connection: send bytes as they are, read answers as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""
        self.eof = False
        self.heads: list[bool] = []  # per request sent: a HEAD (its answer has no body)

    @classmethod
    async def open(cls, base: str) -> Conn:
        port = int(base.rsplit(":", 1)[1])
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.heads += [method == b"HEAD" for method in re.findall(rb"(?:^|\r\n\r\n)([A-Z]+) /", data)]
        self.writer.write(data)
        await self.writer.drain()

    async def _more(self) -> None:
        chunk = await self.reader.read(65536)
        if not chunk:
            self.eof = True
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    async def _until(self, separator: bytes) -> bytes:
        while (end := self.buffer.find(separator)) < 0:
            await self._more()
        found, self.buffer = self.buffer[: end + len(separator)], self.buffer[end + len(separator) :]
        return found

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    async def answer(self, timeout: float = 10.0) -> Answer:
        async with asyncio.timeout(timeout):
            head = await self._until(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if self.heads.pop(0) if self.heads else False:
                body = b""
            elif re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
                body = b""
                while size := int((await self._until(b"\r\n")).strip(), 16):
                    body += await self._exactly(size)
                    await self._exactly(2)
                await self._exactly(2)
            else:
                body = await self._exactly(int(length.group(1))) if length else b""
        return Answer(status, re.sub(rb"\r\nDate: [^\r]*", b"", head), body)

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF) within ``timeout`` and sent nothing more; False if
        it sent nothing more by then, or sent more (the start of another answer, for :meth:`answer`)."""
        if self.buffer:
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._more()
        except TimeoutError:
            return False
        except EOFError:
            return True
        return False

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def get(path: str, *extra: str, token: str = TOKEN, version: str = "1.1", method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: dagcache.test", f"Authorization: {token}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Lane:
    stack: Stack
    server: _ProxyServer
    lane: HitLane
    db: str

    @property
    def base(self) -> str:
        return self.stack.base

    async def connect(self, *, lane: bool) -> Conn:
        """A connection whose requests may (or may not) take the lane: the lane is fixed per connection."""
        self.server.lane = self.lane if lane else None
        try:
            return await Conn.open(self.base)
        finally:
            self.server.lane = self.lane

    async def exchange(self, data: bytes, count: int, *, lane: bool, pause: float = 0.0) -> tuple[list[Answer], int]:
        """Send ``data`` on a fresh connection, read ``count`` answers; also how many the lane answered."""
        before = self.lane.answered
        conn = await self.connect(lane=lane)
        try:
            await conn.send(data)
            if pause:
                await asyncio.sleep(pause)
            answers = [await conn.answer() for _ in range(count)]
        finally:
            await conn.aclose()
        return answers, self.lane.answered - before

    async def both(self, data: bytes, count: int = 1) -> tuple[list[Answer], int]:
        """The answers of the full path and of the lane (asserted identical), and how many the lane took."""
        full, none = await self.exchange(data, count, lane=False)
        assert none == 0
        laned, answered = await self.exchange(data, count, lane=True)
        assert laned == full
        return laned, answered


async def start_lane(upstream: UpstreamServer, redis_url: str, directory: Path, **server: object) -> Lane:
    db = airflow_db(directory, "dag_a", "dag_b")
    stack = Stack()
    await stack.start(
        upstream={"url": upstream.url},
        database={"url": db},
        redis={"url": redis_url, "key_prefix": f"lane{secrets.token_hex(4)}"},
        versions={"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0},
        server=dict(server),
    )
    proxy = stack.runners[0].server
    assert isinstance(proxy, _ProxyServer) and proxy.lane is not None
    return Lane(stack, proxy, proxy.lane, db.removeprefix("sqlite+aiosqlite:///"))


@pytest.fixture
async def lane(upstream: UpstreamServer, redis_url: str, tmp_path: Path) -> AsyncIterator[Lane]:
    started = await start_lane(upstream, redis_url, tmp_path)
    yield started
    await started.stack.aclose()


async def warm(lane: Lane, path: str, *extra: str) -> Answer:
    """Fill ``path`` (MISS) and return its first HIT."""
    (miss,), _ = await lane.exchange(get(path, *extra), 1, lane=False)
    assert miss.header("X-Cache") == "MISS", miss
    (hit,), _ = await lane.exchange(get(path, *extra), 1, lane=False)
    assert hit.header("X-Cache") == "HIT", hit
    return hit


# ----- the same answers ---------------------------------------------------------------------------------------

ENCODINGS = ["gzip", "identity", "br", "gzip, deflate, br, zstd", "br;q=0, gzip", "*", "gzip;q=0, identity;q=1"]


@pytest.mark.parametrize("path", [DAG, TASKS])
async def test_hits_are_the_same_bytes_as_on_the_full_path(lane: Lane, path: str) -> None:
    await warm(lane, path)
    for encoding in ENCODINGS:
        (answer,), answered = await lane.both(get(path, f"Accept-Encoding: {encoding}"))
        assert (answer.status, answer.header("X-Cache"), answered) == (200, "HIT", 1), encoding
    (answer,), answered = await lane.both(get(path))  # no Accept-Encoding
    assert (answer.status, answered) == (200, 1)
    assert answer.header("Content-Encoding") is None
    assert answer.header("Vary") == "Accept-Encoding" and answer.header("X-Dagcache-Generation")
    assert json.loads(answer.body)["raw_path"] == path  # the stand-in upstream's echo of the fill


async def test_revalidation_is_the_same_304_as_on_the_full_path(lane: Lane) -> None:
    etag = (await warm(lane, DAG)).header("ETag")
    assert etag is not None
    for offered in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        (answer,), answered = await lane.both(get(DAG, f"If-None-Match: {offered}", "Accept-Encoding: gzip"))
        assert (answer.status, answer.body, answered) == (304, b"", 1), offered
        assert answer.header("ETag") == etag and answer.header("Content-Length") is None
    (answer,), answered = await lane.both(get(DAG, 'If-None-Match: "other"'))
    assert (answer.status, answered) == (200, 1)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(get(DAG, method="HEAD"), id="HEAD"),
        pytest.param(get(DAG, version="1.0"), id="HTTP/1.0"),
        pytest.param(get(DAG, "Connection: close"), id="connection-close"),
        pytest.param(get(DAG, "X-Dagcache-Bypass: not-the-admin-token"), id="bypass-header"),
        pytest.param(get(DAG, "Content-Length: 0"), id="content-length-0"),
        pytest.param(get(DAG, "Expect: 100-continue"), id="expect"),
        pytest.param(get(DAG + "?unknown=1"), id="unknown-parameter"),
        pytest.param(get(DAG, token="Bearer not-a-jwt"), id="malformed-token"),
        pytest.param(get(DAG.replace("/dags/", "/dags/./")), id="dot-segment"),
        pytest.param(get("/status/404"), id="pass-through-route"),
        pytest.param(get(DAG, "Connection: Upgrade", "Upgrade: h2c"), id="upgrade"),
    ],
)
async def test_what_the_lane_does_not_take_goes_to_the_full_path(lane: Lane, request_: bytes) -> None:
    await warm(lane, DAG)
    full, _ = await lane.exchange(request_, 1, lane=False)
    laned, answered = await lane.exchange(request_, 1, lane=True)
    assert answered == 0
    assert laned[0].status == full[0].status
    assert laned[0].header("X-Cache") == full[0].header("X-Cache")
    if full[0].header("X-Cache") in ("HIT", None) and b"remote" not in full[0].body:
        assert laned == full


async def test_an_entry_only_redis_has_is_read_by_the_full_path_then_the_lane(lane: Lane) -> None:
    await warm(lane, DAG)
    layer = lane.lane._layer
    memory = layer._memory
    assert memory is not None
    await memory.aclose()  # L1 emptied: the entry is in Redis only
    (first,), answered = await lane.exchange(get(DAG), 1, lane=True)
    assert (first.header("X-Cache"), answered) == ("HIT", 0)  # read from Redis by the full path, kept in L1
    (second,), answered = await lane.exchange(get(DAG), 1, lane=True)
    assert (second, answered) == (first, 1)


# ----- pipelining, keep-alive, flow control -------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(lane: Lane) -> None:
    etag = (await warm(lane, DAG)).header("ETag")
    await warm(lane, TASKS)
    pipeline = [
        get(DAG, "Accept-Encoding: gzip"),
        get(TASKS),
        get(DAG, f"If-None-Match: {etag}"),
        get(DAG + "?unknown=1"),  # BYPASS: from here on aiohttp answers, in order
        get(TASKS, "Accept-Encoding: br"),
        get(DAG, method="HEAD"),
        get(DAG, "Connection: close"),
    ]
    full, _ = await lane.exchange(b"".join(pipeline), len(pipeline), lane=False)
    laned, answered = await lane.exchange(b"".join(pipeline), len(pipeline), lane=True)
    assert answered == 3
    assert [(a.status, a.header("X-Cache")) for a in laned] == [
        (200, "HIT"),
        (200, "HIT"),
        (304, "HIT"),
        (200, "BYPASS"),
        (200, "HIT"),
        (200, "BYPASS"),
        (200, "HIT"),
    ]
    for i in (0, 1, 2, 4, 6):
        assert laned[i] == full[i], i


async def test_one_connection_alternates_between_the_lane_and_the_full_path(lane: Lane) -> None:
    await warm(lane, DAG)
    conn = await lane.connect(lane=True)
    before = lane.lane.answered
    try:
        for i in range(6):
            bypass = i % 2 == 1
            await conn.send(get(DAG + ("?unknown=1" if bypass else "")))
            answer = await conn.answer()
            assert answer.header("X-Cache") == ("BYPASS" if bypass else "HIT")
            await asyncio.sleep(0.05)  # aiohttp back to idle: the next hit takes the lane again
    finally:
        await conn.aclose()
    assert lane.lane.answered - before == 3


async def test_a_client_that_does_not_read_gets_every_answer_in_order(lane: Lane) -> None:
    pad = [f"X-Pad-{i}: {'p' * 7000}" for i in range(3)]
    await warm(lane, DAG, *pad)  # the stand-in echoes the fill's headers: a 21 KB body
    count = 300
    answers, answered = await lane.exchange(get(DAG, "Accept-Encoding: identity") * count, count, lane=True, pause=1)
    assert {(a.status, a.header("X-Cache"), len(a.body)) for a in answers} == {(200, "HIT", len(answers[0].body))}
    assert len(answers[0].body) > 20_000
    assert 0 < answered < count  # the socket's buffer filled up: aiohttp took over, waiting for the drain


async def test_keepalive_timeout_closes_idle_connections_not_busy_ones(
    upstream: UpstreamServer, redis_url: str, tmp_path: Path
) -> None:
    lane = await start_lane(upstream, redis_url, tmp_path, keepalive_timeout=1.0)
    try:
        await warm(lane, DAG)
        idle, busy = await lane.connect(lane=True), await lane.connect(lane=True)
        before = lane.lane.answered
        await idle.send(get(DAG))
        assert (await idle.answer()).header("X-Cache") == "HIT"
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # longer than the timeout, but never idle for 1 s
            await busy.send(get(DAG))
            assert (await busy.answer()).status == 200
            await asyncio.sleep(0.3)
        assert await idle.closed(timeout=0.1)
        assert not await busy.closed(timeout=0.1)
        assert lane.lane.answered - before >= 9
        assert await busy.closed(timeout=3)
        await idle.aclose()
        await busy.aclose()
    finally:
        await lane.stack.aclose()


async def test_shutdown_closes_lane_connections(upstream: UpstreamServer, redis_url: str, tmp_path: Path) -> None:
    lane = await start_lane(upstream, redis_url, tmp_path)
    try:
        await warm(lane, DAG)
        conn = await lane.connect(lane=True)
        await conn.send(get(DAG))
        assert (await conn.answer()).header("X-Cache") == "HIT"
        assert lane.lane.answered == 1
        await lane.stack.runners[0].cleanup()  # what SIGTERM does (proxy.server.serve_proxy)
        assert await conn.closed(timeout=5)
        await conn.aclose()
    finally:
        await lane.stack.aclose()


# ----- framing and limits: the full path's parser, the full path's answers -------------------------------------

_HEAD = f"GET {DAG} HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(_HEAD + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="cl-and-te"),
        pytest.param(_HEAD + "X-Folded: a\r\n  b\r\n\r\n", 400, id="obs-fold"),
        pytest.param(_HEAD + "Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", 400, id="bad-chunk-size"),
        pytest.param(_HEAD + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", 400, id="bad-chunk-end"),
        pytest.param(_HEAD + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, id="two-lengths"),
        pytest.param(_HEAD + "Content-Length: -1\r\n\r\n", 400, id="negative-length"),
        pytest.param(_HEAD + "Transfer-Encoding: gzip, chunked, x\r\n\r\n", 400, id="te-not-chunked-last"),
        pytest.param(_HEAD + "X-Space : a\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(_HEAD + "X-Nul: a\x00b\r\n\r\n", 400, id="nul-in-value"),
        pytest.param(_HEAD.replace("\r\n", "\n") + "\n", 400, id="bare-lf"),
        pytest.param(
            f"GET {DAG} HTTP/1.1\r\nHost: x\r\nHost: y\r\nAuthorization: {TOKEN}\r\n\r\n", 400, id="two-hosts"
        ),
        pytest.param(f"GET {DAG}?{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="url-too-long"),
        pytest.param(_HEAD + "".join(f"X-{i}: v\r\n" for i in range(120)) + "\r\n", 431, id="too-many-headers"),
        pytest.param(_HEAD + "".join(f"X-{i}: {'v' * 4000}\r\n" for i in range(9)) + "\r\n", 431, id="headers-too-big"),
        pytest.param(_HEAD + f"X-Big: {'v' * 40_000}\r\n\r\n", 431, id="one-header-too-big"),
    ],
)
@pytest.mark.parametrize("after_a_hit", ["alone", "same-packet", "next-packet"])
async def test_malformed_requests_get_the_full_paths_answer(
    lane: Lane, raw: str, status: int, after_a_hit: str
) -> None:
    await warm(lane, DAG)
    hit = get(DAG)
    results = []
    for use_lane in (False, True):
        before = lane.lane.answered
        conn = await lane.connect(lane=use_lane)
        try:
            if after_a_hit == "next-packet":
                await conn.send(hit)
                first = await conn.answer()
                assert first.header("X-Cache") == "HIT"
            await conn.send((hit if after_a_hit == "same-packet" else b"") + raw.encode("latin-1"))
            answers = [await conn.answer()]
            while not await conn.closed(timeout=0.5):  # raises on bytes that are not an answer's start
                answers.append(await conn.answer())
        finally:
            await conn.aclose()
        results.append((answers, lane.lane.answered - before))
    (full, _), (laned, answered) = results
    assert laned == full  # and both closed the connection after the last
    assert laned[-1].status == status, laned[-1]
    if after_a_hit == "same-packet" and len(laned) == 2:  # the parser took it; proxy.limits refuses it
        assert laned[0].header("X-Cache") == "HIT" and answered == 1
    else:  # a refusal of the parser refuses the whole packet, the hit before it included, on both paths
        assert len(laned) == 1 and answered == (1 if after_a_hit == "next-packet" else 0)


# ----- credentials, metrics, access log ----------------------------------------------------------------------


def _token(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"Bearer {part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.c2ln"


async def test_expiring_and_revoked_credentials_leave_the_lane(lane: Lane) -> None:
    now = int(time.time())
    expiring = _token({"sub": "u2", "jti": "expiring", "exp": now + 30})  # within the default refresh window
    expired = _token({"sub": "u3", "jti": "expired", "exp": now - 5})
    for token in (expiring, expired):
        for use_lane in (False, True):
            (answer,), answered = await lane.exchange(get(DAG, token=token), 1, lane=use_lane)
            assert (answer.header("X-Cache"), answered) == ("BYPASS", 0)

    revoked = _token({"sub": "u4", "jti": "revoke-me", "exp": now + 3600})
    (miss,), _ = await lane.exchange(get(DAG, token=revoked), 1, lane=True)
    (hit,), answered = await lane.exchange(get(DAG, token=revoked), 1, lane=True)
    assert (miss.header("X-Cache"), hit.header("X-Cache"), answered) == ("MISS", "HIT", 1)
    engine = create_engine(f"sqlite:///{lane.db}")
    with engine.begin() as conn:
        expires = datetime.now(UTC) + timedelta(hours=1)
        conn.execute(insert(schema.revoked_token).values(jti="revoke-me", exp=expires))
    engine.dispose()

    async def refused() -> bool:
        (answer,), answered = await lane.exchange(get(DAG, token=revoked), 1, lane=True)
        return answer.header("X-Cache") == "BYPASS" and answered == 0

    await until(refused, timeout=10)


async def test_metrics_and_access_log_are_the_full_paths(lane: Lane, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxy.access")
    etag = (await warm(lane, DAG)).header("ETag")
    layer = lane.lane._layer
    sequence = [
        get(DAG, "Accept-Encoding: gzip", "X-Request-Id: req-1"),
        get(TASKS.replace("tasks", "details")),  # MISS then HIT below: not the lane's
        get(DAG, f"If-None-Match: {etag}", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        get(DAG, "Accept-Encoding: identity"),
    ]
    await lane.exchange(sequence[1], 1, lane=False)  # fill details: both runs then see a HIT

    async def run(use_lane: bool) -> tuple[dict[tuple[str, ...], int], float, tuple[int, int], list[dict[str, object]]]:
        async with aiohttp.ClientSession() as client:
            before = await scrape(client, lane.stack.admin)
            counters = (layer.counters.hits, layer.counters.not_modified)
            caplog.clear()
            _, answered = await lane.exchange(b"".join(sequence), len(sequence), lane=use_lane)
            assert answered == (len(sequence) if use_lane else 0)

            async def counted() -> bool:
                after = await scrape(client, lane.stack.admin)
                return after.total("dagcache_requests_total") - before.total("dagcache_requests_total") == len(sequence)

            await until(counted)
            after = await scrape(client, lane.stack.admin)
        rows = table(after, "dagcache_requests_total", "route", "outcome", "status")
        old = table(before, "dagcache_requests_total", "route", "outcome", "status")
        delta = {k: v - old.get(k, 0) for k, v in rows.items() if v - old.get(k, 0)}
        seconds = after.total("dagcache_request_seconds_count") - before.total("dagcache_request_seconds_count")
        served = after.total("dagcache_cache_served_bytes_total") - before.total("dagcache_cache_served_bytes_total")
        assert seconds == len(sequence)
        lines = [_fields(r) for r in caplog.records if r.name == "proxy.access"]
        hits = (layer.counters.hits - counters[0], layer.counters.not_modified - counters[1])
        return delta, served, hits, lines

    full = await run(False)
    laned = await run(True)
    assert laned == full
    assert full[0] == {("api.dag", "HIT", "200"): 2, ("api.dag.details", "HIT", "200"): 1, ("api.dag", "304", "304"): 1}
    assert full[2] == (3, 1)
    assert len(full[3]) == len(sequence)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
    return {k: v for k, v in record.__dict__.items() if k not in standard and k != "duration_ms"} | {
        "msg": record.getMessage()
    }


# ----- the switch ----------------------------------------------------------------------------------------------


async def test_hit_lane_false_leaves_every_request_to_aiohttp(
    upstream: UpstreamServer, redis_url: str, tmp_path: Path
) -> None:
    stack = await Stack().start(
        upstream={"url": upstream.url},
        database={"url": airflow_db(tmp_path, "dag_a")},
        redis={"url": redis_url, "key_prefix": f"lane{secrets.token_hex(4)}"},
        server={"hit_lane": False},
    )
    try:
        proxy = stack.runners[0].server
        assert isinstance(proxy, _ProxyServer) and proxy.lane is None
        async with aiohttp.ClientSession() as client:
            for expected in ("MISS", "HIT"):
                async with client.get(stack.base + DAG, headers=bearer()) as resp:
                    assert resp.headers["X-Cache"] == expected
    finally:
        await stack.aclose()


async def test_an_aiohttp_without_what_the_lane_needs_turns_it_off(
    upstream: UpstreamServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("proxy.server._LANE_NEEDS", ("_waiter", "_no_such_attribute"))
    stack = await Stack().start(
        upstream={"url": upstream.url},
        database={"url": airflow_db(tmp_path, "dag_a")},
        redis={"url": redis_url, "key_prefix": f"lane{secrets.token_hex(4)}"},
    )
    try:
        proxy = stack.runners[0].server
        assert isinstance(proxy, _ProxyServer) and proxy.lane is None
        assert "hit lane off" in caplog.text and "_no_such_attribute" in caplog.text
    finally:
        await stack.aclose()


async def test_a_failing_lane_leaves_the_request_to_the_full_path(
    lane: Lane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await warm(lane, DAG)

    def broken(self: HitLane, message: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(HitLane, "answer", broken)
    conn = await lane.connect(lane=True)
    try:
        for _ in range(2):  # and the connection survives
            await conn.send(get(DAG))
            assert await conn.answer() == expected
    finally:
        await conn.aclose()
    assert "hit lane: GET /api/v2/dags/dag_a left to aiohttp" in caplog.text


async def test_a_failing_access_logger_costs_the_line_not_the_connection(
    lane: Lane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "proxy.access")
    expected = await warm(lane, DAG)

    def broken(*args: object) -> None:
        raise AttributeError("an attribute the lane's request does not have")

    monkeypatch.setattr("proxy.logs.AccessLogger.log", broken)
    before = lane.lane.answered
    conn = await lane.connect(lane=True)
    try:
        for _ in range(2):
            await conn.send(get(DAG))
            assert await conn.answer() == expected
    finally:
        await conn.aclose()
    assert lane.lane.answered - before == 2
    assert "hit lane: counting or logging an answer failed" in caplog.text

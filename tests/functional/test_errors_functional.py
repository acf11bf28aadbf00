"""Clear answers for what cannot be forwarded: upstream failures and requests over the limits."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import StartProxy, UpstreamServer
from tests.servers import free_port

pytestmark = pytest.mark.functional


async def _raw(base: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, return (status, headers, body) of the answer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), headers, body


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a log record carries a traceback"


async def test_unreachable_upstream_gives_502_json(start_proxy: StartProxy, caplog: pytest.LogCaptureFixture):
    dead = f"http://127.0.0.1:{free_port()}"
    base = await start_proxy(upstream={"url": dead, "connect_timeout": 1})
    with caplog.at_level(logging.WARNING):
        async with aiohttp.ClientSession() as client, client.get(base + "/api/v2/dags") as resp:
            body = await resp.json()
    assert resp.status == 502
    assert body["error"] == "upstream_unavailable"
    assert dead in body["detail"]
    assert any("upstream failed: GET /api/v2/dags -> 502" in r.getMessage() for r in caplog.records)
    _no_tracebacks(caplog)


async def test_slow_upstream_gives_504_json(start_proxy: StartProxy, caplog: pytest.LogCaptureFixture):
    base = await start_proxy(upstream={"read_timeout": 0.3})
    async with aiohttp.ClientSession() as client, client.get(base + "/slow?delay=3") as resp:
        body = await resp.json()
    assert resp.status == 504
    assert body["error"] == "upstream_timeout"
    _no_tracebacks(caplog)


async def test_read_timeout_is_between_reads_not_total(start_proxy: StartProxy):
    """A slow but steady stream (logs) is not cut by read_timeout; only silence is."""
    base = await start_proxy(upstream={"read_timeout": 1.0})
    async with aiohttp.ClientSession() as client, client.get(base + "/slow?delay=0.5") as resp:
        assert resp.status == 200


async def test_upstream_dying_mid_body_truncates_the_client_response(start_proxy: StartProxy):
    """Never a complete-looking body: the client must notice that the upstream broke off."""
    base = await start_proxy()
    async with aiohttp.ClientSession() as client, client.get(base + "/truncate") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_url_too_long_gives_414(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(server={"max_url_length": 1024})
    status, headers, body = await _raw(base, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    assert json.loads(body)["error"] == "uri_too_long"
    assert upstream.gates.requests == []


async def test_oversized_header_field_gives_431(start_proxy: StartProxy, caplog: pytest.LogCaptureFixture):
    base = await start_proxy(server={"max_header_size": 4096})
    status, _, body = await _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert status == 431
    assert json.loads(body)["error"] == "request_header_fields_too_large"
    _no_tracebacks(caplog)


async def test_headers_over_total_budget_give_431(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(server={"max_header_size": 4096})
    headers = {f"X-H{i}": "v" * 500 for i in range(12)}  # each field is small, the sum is not
    async with aiohttp.ClientSession() as client, client.get(base + "/x", headers=headers) as resp:
        assert resp.status == 431
        assert (await resp.json())["error"] == "request_header_fields_too_large"
    assert upstream.gates.requests == []


async def test_too_many_headers_give_431(start_proxy: StartProxy):
    base = await start_proxy(server={"max_header_count": 20})
    headers = "".join(f"X-H{i}: v\r\n" for i in range(40)).encode()
    status, _, body = await _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431


async def test_declared_body_over_limit_gives_413_without_upstream(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(server={"max_body_size": 1000})
    async with aiohttp.ClientSession() as client, client.post(base + "/api/v2/x", data=b"x" * 5000) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "content_too_large"
    assert upstream.gates.requests == []


async def test_chunked_body_over_limit_gives_413(start_proxy: StartProxy):
    base = await start_proxy(server={"max_body_size": 100_000})

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 65536

    async with aiohttp.ClientSession() as client, client.post(base + "/upload-gate", data=body()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "content_too_large"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="bad-request-line"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="content-length-and-chunked",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", id="bad-content-length"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET http://evil.example/x HTTP/1.1\r\nHost: x\r\n\r\n", id="absolute-form"),
    ],
)
async def test_malformed_requests_get_400_json(
    start_proxy: StartProxy, upstream: UpstreamServer, caplog: pytest.LogCaptureFixture, raw: bytes
):
    base = await start_proxy()
    status, headers, body = await _raw(base, raw)
    assert status == 400
    assert json.loads(body)["error"] == "bad_request"
    assert upstream.gates.requests == []
    _no_tracebacks(caplog)

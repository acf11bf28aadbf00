"""The pass-through proxy over real sockets: nothing lost, nothing mangled, nothing buffered."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import StartProxy, UpstreamServer

pytestmark = pytest.mark.functional


def _headers(seen: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    pairs = seen["headers"]
    assert isinstance(pairs, list)
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


async def _json(resp: aiohttp.ClientResponse) -> dict[str, object]:
    return json.loads(await resp.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_every_method_reaches_upstream_with_body_and_target_unchanged(start_proxy: StartProxy, method: str):
    base = await start_proxy()
    body = b"" if method in ("GET", "OPTIONS") else json.dumps({"state": "success"}).encode()
    target = "/api/v2/dags/a%2Fb/dagRuns?state=running&state=queued&x=%E2%9C%93"
    async with aiohttp.ClientSession() as client, client.request(method, base + target, data=body or None) as resp:
        seen = await _json(resp)
    assert resp.status == 200
    assert seen["method"] == method
    assert seen["raw_path"] == target
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_head_passes_content_length_without_body(start_proxy: StartProxy):
    base = await start_proxy()
    async with aiohttp.ClientSession() as client, client.head(base + "/big?size=12345") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "12345"
        assert await resp.read() == b""


async def test_response_is_streamed_before_upstream_finishes(start_proxy: StartProxy, upstream: UpstreamServer):
    """Airflow log streaming: the client gets the first line while the upstream is still writing."""
    base = await start_proxy()
    async with aiohttp.ClientSession() as client, client.get(base + "/stream") as resp:
        first = await asyncio.wait_for(resp.content.readline(), 5)
        assert first == b'{"line": 1}\n'
        assert not upstream.gates.release_rest.is_set()
        upstream.gates.release_rest.set()
        assert await resp.content.readline() == b'{"line": 2}\n'


async def test_request_body_is_streamed_before_client_finishes(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy()
    gates = upstream.gates

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        # The upstream must see the first bytes while the client still holds the rest back.
        await asyncio.wait_for(gates.first_chunk_received.wait(), 5)
        yield b"y" * 1000

    async with aiohttp.ClientSession() as client, client.post(base + "/upload-gate", data=body()) as resp:
        seen = await _json(resp)
    assert resp.status == 200
    assert seen["body_len"] == 2000
    assert _headers(seen).get("transfer-encoding") == ["chunked"]


async def test_content_length_body_keeps_its_length(start_proxy: StartProxy):
    base = await start_proxy()
    payload = b"z" * 300_000
    async with aiohttp.ClientSession() as client, client.put(base + "/api/v2/variables/x", data=payload) as resp:
        seen = await _json(resp)
    headers = _headers(seen)
    assert headers["content-length"] == ["300000"]
    assert "transfer-encoding" not in headers
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_large_download_arrives_byte_exact(start_proxy: StartProxy):
    base = await start_proxy()
    size = 64 * 1024 * 1024 + 7
    hasher = hashlib.sha256()
    received = 0
    async with aiohttp.ClientSession() as client, client.get(base + f"/big?size={size}") as resp:
        assert resp.headers["Content-Length"] == str(size)
        async for chunk in resp.content.iter_chunked(1 << 20):
            hasher.update(chunk)
            received += len(chunk)
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    for offset in range(0, size, len(block)):
        expected.update(block[: min(len(block), size - offset)])
    assert received == size
    assert hasher.hexdigest() == expected.hexdigest()


async def test_compressed_body_passes_untouched(start_proxy: StartProxy):
    base = await start_proxy()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.get(base + "/gzip", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        raw = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(raw) == b'{"compressed": true}' * 100


async def test_proxy_adds_no_accept_encoding_or_user_agent(start_proxy: StartProxy):
    base = await start_proxy()
    async with (
        aiohttp.ClientSession(skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept")) as client,
        client.get(base + "/plain") as resp,
    ):
        headers = _headers(await _json(resp))
    assert "accept-encoding" not in headers
    assert "user-agent" not in headers
    assert "accept" not in headers


async def test_set_cookie_and_redirect_location_are_never_rewritten(start_proxy: StartProxy):
    base = await start_proxy()
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/cookies") as resp:
            assert resp.headers.getall("Set-Cookie") == [
                "_token=abc.def.ghi; Path=/; HttpOnly",
                "session=xyz; Path=/airflow; Secure; SameSite=Lax",
            ]
        async with client.get(base + "/redirect", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "http://airflow.internal:8080/login/?next=%2Fhome"


async def test_cookies_of_one_client_never_reach_another(start_proxy: StartProxy):
    base = await start_proxy()
    async with aiohttp.ClientSession() as alice:
        async with alice.get(base + "/cookies") as resp:
            assert resp.status == 200
    async with aiohttp.ClientSession() as bob, bob.get(base + "/whoami") as resp:
        headers = _headers(await _json(resp))
    assert "cookie" not in headers


@pytest.mark.parametrize("code", [201, 204, 304, 400, 401, 403, 404, 409, 418, 422, 500, 503])
async def test_status_codes_pass_through(start_proxy: StartProxy, code: int):
    base = await start_proxy()
    async with aiohttp.ClientSession() as client, client.get(base + f"/status/{code}") as resp:
        assert resp.status == code
        body = await resp.read()
    if code not in (204, 304):
        assert json.loads(body) == {"status": code}


async def test_hop_by_hop_headers_are_stripped_both_ways(start_proxy: StartProxy):
    base = await start_proxy()
    request_headers = {
        "Connection": "keep-alive, X-Client-Hop",
        "X-Client-Hop": "should-not-pass",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Upgrade": "websocket",
        "X-Custom": "kept",
        "Authorization": "Bearer tok",
    }
    async with aiohttp.ClientSession() as client, client.get(base + "/hop", headers=request_headers) as resp:
        seen = _headers(await _json(resp))
        for name in ("X-Private-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
            assert name not in resp.headers
        assert resp.headers["X-End-To-End"] == "kept"
    for name in ("x-client-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen
    assert seen["x-custom"] == ["kept"]
    assert seen["authorization"] == ["Bearer tok"]


async def test_forwarded_headers_from_untrusted_client_are_replaced(start_proxy: StartProxy):
    base = await start_proxy()
    spoof = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "1",
        "X-Forwarded-Prefix": "/evil",
        "Forwarded": "for=6.6.6.6;proto=https",
        "Host": "airflow.example.com:8443",
    }
    async with aiohttp.ClientSession() as client, client.get(base + "/x", headers=spoof) as resp:
        seen = _headers(await _json(resp))
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["airflow.example.com:8443"]
    assert seen["x-forwarded-port"] == ["8443"]
    assert "x-forwarded-prefix" not in seen
    assert "forwarded" not in seen
    assert seen["host"] == ["airflow.example.com:8443"]


async def test_forwarded_headers_from_trusted_proxy_are_kept_and_extended(start_proxy: StartProxy):
    base = await start_proxy(server={"trusted_proxies": ["127.0.0.0/8"]})
    inbound = {
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "airflow.example.com",
        "X-Forwarded-Port": "443",
    }
    async with aiohttp.ClientSession() as client, client.get(base + "/x", headers=inbound) as resp:
        seen = _headers(await _json(resp))
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["airflow.example.com"]
    assert seen["x-forwarded-port"] == ["443"]


async def test_host_header_upstream_mode(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(upstream={"host_header": "upstream"})
    async with aiohttp.ClientSession() as client, client.get(base + "/x", headers={"Host": "public.example"}) as resp:
        seen = _headers(await _json(resp))
    assert seen["host"] == [f"127.0.0.1:{upstream.port}"]
    assert seen["x-forwarded-host"] == ["public.example"]


async def test_base_path_is_passed_unchanged_by_default(start_proxy: StartProxy):
    base = await start_proxy(server={"base_path": "/airflow"})
    async with aiohttp.ClientSession() as client, client.get(base + "/airflow/api/v2/dags?limit=1") as resp:
        seen = await _json(resp)
    assert seen["raw_path"] == "/airflow/api/v2/dags?limit=1"
    assert "x-forwarded-prefix" not in _headers(seen)


async def test_base_path_stripped_and_reported_as_prefix(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(server={"base_path": "/airflow/", "strip_base_path": True})
    async with aiohttp.ClientSession() as client:
        async with client.get(base + "/airflow/api/v2/dags?limit=1") as resp:
            seen = await _json(resp)
        assert seen["raw_path"] == "/api/v2/dags?limit=1"
        assert _headers(seen)["x-forwarded-prefix"] == ["/airflow"]
        async with client.get(base + "/airflowish/x") as resp:
            assert (await _json(resp))["raw_path"] == "/airflowish/x"


async def test_upstream_url_path_is_prepended(start_proxy: StartProxy, upstream: UpstreamServer):
    base = await start_proxy(upstream={"url": upstream.url + "/mounted/"})
    async with aiohttp.ClientSession() as client, client.get(base + "/api/v2/version") as resp:
        assert (await _json(resp))["raw_path"] == "/mounted/api/v2/version"


async def test_execution_api_passes_through_like_any_write(start_proxy: StartProxy):
    """Task workers PATCH /execution/... on the api-server's port; the sidecar must pass it intact."""
    base = await start_proxy()
    payload = {"state": "success", "end_date": "2026-11-25T00:00:00Z"}
    headers = {"Authorization": "Bearer task-jwt", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as client,
        client.patch(base + "/execution/task-instances/0193/state", json=payload, headers=headers) as resp,
    ):
        seen = await _json(resp)
    assert resp.status == 200
    assert seen["raw_path"] == "/execution/task-instances/0193/state"
    assert seen["body_sha256"] == hashlib.sha256(json.dumps(payload).encode()).hexdigest()
    assert _headers(seen)["authorization"] == ["Bearer task-jwt"]

"""The upstream leg: stream a client request to Airflow and its answer back, nothing buffered.

:class:`Upstream` owns no session; :mod:`proxy.app` builds the pooled ``aiohttp.ClientSession`` (with
a ``DummyCookieJar``, so one user's cookies never reach another's request, and ``auto_decompress=False``,
so encoded bodies pass byte for byte) and hands it in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.config import ServerConfig, UpstreamConfig
from proxy.errors import RequestRejected, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.forwarding import ClientHop, Network, is_trusted, request_headers, response_headers, upstream_target
from proxy.limits import body_too_large

if TYPE_CHECKING:
    from proxy.metrics import Telemetry

log = logging.getLogger("proxy.upstream")

_CHUNK = 64 * 1024
# Never let aiohttp add headers the client did not send.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@contextmanager
def map_client_errors() -> Iterator[None]:
    """Translate aiohttp client errors raised before the response headers into :class:`UpstreamError`."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(_describe(exc) or "no response within the configured timeout") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete upstream answer (hop-by-hop headers already dropped)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _BodyCounter:
    limit: int
    seen: int = 0
    exceeded: bool = False


class Upstream:
    """Forwards requests to one upstream origin through an injected, pooled session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        upstream: UpstreamConfig,
        server: ServerConfig,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._session = session
        self._telemetry = telemetry
        self._config = upstream
        url = URL(upstream.url)
        self._origin = str(url.origin())
        self._netloc = url.raw_authority
        self._path = url.raw_path.rstrip("/")
        self._server = server
        self._trusted: tuple[Network, ...] | Literal["*"] = server.trusted_networks()
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=upstream.connect_timeout + upstream.pool_timeout,
            sock_connect=upstream.connect_timeout,
            sock_read=upstream.read_timeout or None,
        )

    @property
    def origin(self) -> str:
        return self._origin

    def _hop(self, request: web.BaseRequest) -> ClientHop:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local_port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        peer = request.remote
        return ClientHop(
            peer=peer,
            scheme=request.scheme,
            local_port=local_port,
            trusted=is_trusted(peer, self._trusted),
        )

    async def relay(
        self,
        request: web.BaseRequest,
        extra_headers: tuple[tuple[str, str], ...] = (),
        *,
        before_eof: Callable[[int], Awaitable[None]] | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` upstream and stream the answer to the client (plus ``extra_headers``).
        With ``before_eof``, the answer (a write's: small) is read in full first and ``before_eof(status)`` runs
        before any of it is sent (read-your-writes: a client may send its next request as soon as its answer is
        complete, which for a ``Content-Length`` body is its last byte).

        Raises :class:`UpstreamError` if no response headers arrived, :class:`RequestRejected` if the
        client's chunked body exceeds ``server.max_body_size``.
        """
        counter = _BodyCounter(self._server.max_body_size)
        data: AsyncIterator[bytes] | bytes | None = None
        if request.body_exists:
            data = _counted(request.content, counter)
        elif request.content_length == 0:
            data = b""
        try:
            upstream = await self._send(request, data, identity=False)
        except UpstreamError:
            if counter.exceeded:
                raise body_too_large(counter.limit) from None
            raise
        try:
            return await self._stream_back(request, upstream, extra_headers, before_eof)
        finally:
            upstream.release()

    async def fetch(self, request: web.BaseRequest) -> Fetched:
        """A body-less request (a cacheable GET) answered in full, asking the upstream for an identity body
        so that the proxy compresses once, deterministically, for every client."""
        upstream = await self._send(request, None, identity=True)
        try:
            with map_client_errors():
                body = await upstream.read()
        finally:
            upstream.release()
        return Fetched(upstream.status, upstream.reason or "", response_headers(list(upstream.headers.items())), body)

    async def _send(
        self, request: web.BaseRequest, data: AsyncIterator[bytes] | bytes | None, *, identity: bool
    ) -> aiohttp.ClientResponse:
        target, prefix = upstream_target(
            request.raw_path,
            base_path=self._server.base_path,
            strip_base_path=self._server.strip_base_path,
            upstream_path=self._path,
        )
        headers = request_headers(
            list(request.headers.items()),
            self._hop(request),
            host_mode=self._config.host_header,
            upstream_netloc=self._netloc,
            prefix=prefix,
        )
        if identity:
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
        started = time.perf_counter()
        try:
            with map_client_errors():
                response = await self._session.request(
                    request.method,
                    URL(self._origin + target, encoded=True),
                    headers=CIMultiDict(headers),
                    data=data,
                    allow_redirects=False,
                    skip_auto_headers=_SKIP_AUTO_HEADERS,
                    timeout=self._timeout,
                )
        except UpstreamError:
            self._observe(request, None, started)
            raise
        self._observe(request, response.status, started)
        return response

    def _observe(self, request: web.BaseRequest, status: int | None, started: float) -> None:
        if self._telemetry is not None:
            self._telemetry.upstream_of(request, status, time.perf_counter() - started)

    async def _stream_back(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        extra_headers: tuple[tuple[str, str], ...],
        before_eof: Callable[[int], Awaitable[None]] | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in response_headers(list(upstream.headers.items())):
            response.headers.add(name, value)
        for name, value in extra_headers:
            response.headers[name] = value
        if before_eof is not None:
            with map_client_errors():
                body = await upstream.read()
            await before_eof(upstream.status)
            await response.prepare(request)
            await response.write(body)
            await response.write_eof()
            return response
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are gone already: the only honest signal left is to cut the connection, so the
            # client sees a truncated body instead of a complete-looking wrong one.
            log.warning("upstream body interrupted: %s %s: %s", request.method, request.path, _describe(exc))
            upstream.close()
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionError:
            # The client went away; drop the upstream connection rather than read the rest.
            upstream.close()
            return response
        await response.write_eof()
        return response


async def _counted(stream: aiohttp.StreamReader, counter: _BodyCounter) -> AsyncIterator[bytes]:
    async for chunk in stream.iter_chunked(_CHUNK):
        counter.seen += len(chunk)
        if counter.limit and counter.seen > counter.limit:
            counter.exceeded = True
            raise RequestRejected(413, "content_too_large", "request body over the limit")
        yield chunk


def error_body(status: int, error: str, detail: str) -> web.Response:
    """The small JSON answer for a request the proxy could not forward."""
    return web.json_response({"error": error, "detail": detail}, status=status)

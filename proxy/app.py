"""Composition root: the only place that builds clients (``ClientSession`` now; Redis and the DB engine
later) and hands them down. State lives under typed ``AppKey``s; resources open and close in
``cleanup_ctx``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from proxy.config import Settings
from proxy.handler import ProxyHandler
from proxy.limits import Limits
from proxy.upstream import Upstream

SETTINGS = web.AppKey("settings", Settings)
CLIENT_SESSION = web.AppKey("client_session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", Upstream)
HANDLER = web.AppKey("handler", ProxyHandler)


def limits_of(settings: Settings) -> Limits:
    server = settings.server
    return Limits(
        max_url_length=server.max_url_length,
        max_header_size=server.max_header_size,
        max_header_count=server.max_header_count,
        max_body_size=server.max_body_size,
    )


def make_client_session(settings: Settings) -> aiohttp.ClientSession:
    """The pooled upstream session: no cookie jar (cookies belong to clients), no decompression."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream.pool_size,
        limit_per_host=0,
        ttl_dns_cache=10,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        read_bufsize=256 * 1024,
        max_line_size=max(settings.server.max_url_length, 8190),
        max_field_size=max(settings.server.max_header_size, 8190),
    )


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = make_client_session(settings)
    app[CLIENT_SESSION] = session
    app[UPSTREAM] = Upstream(session, settings.upstream, settings.server)
    app[HANDLER] = ProxyHandler(app[UPSTREAM], limits_of(settings))
    yield
    await session.close()


def create_app(settings: Settings) -> web.Application:
    """The client-facing proxy application."""
    app = web.Application(client_max_size=settings.server.max_body_size or 2**63)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_upstream_ctx)

    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    return await request.app[HANDLER](request)

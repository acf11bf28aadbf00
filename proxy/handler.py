"""The proxy's request handler: check limits, then answer from the cache layer (when versions and a cache are
configured, :mod:`proxy.caching`) or forward.

Every request ends in exactly one response: the upstream's (streamed), or a small JSON error
``{"error": ..., "detail": ...}`` for a request that is refused (400/413/414/431) or that the upstream
could not answer (502/504). Nothing here raises to aiohttp, so clients never see a traceback page.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.errors import RequestRejected, UpstreamError
from proxy.limits import Limits, check_request, malformed
from proxy.upstream import Upstream, error_body

if TYPE_CHECKING:
    from proxy.caching import CacheLayer

log = logging.getLogger("proxy.handler")


class ProxyHandler:
    """Callable aiohttp handler bound to one :class:`Upstream`."""

    def __init__(self, upstream: Upstream, limits: Limits, cache: CacheLayer | None = None) -> None:
        self._upstream = upstream
        self._limits = limits
        self._cache = cache

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        rejection = self._reject(request)
        if rejection is not None:
            return reject(request, rejection)
        try:
            if self._cache is not None:
                return await self._cache.handle(request)
            return await self._upstream.relay(request)
        except RequestRejected as exc:
            return reject(request, exc)
        except UpstreamError as exc:
            log.warning(
                "upstream failed: %s %s -> %d %s",
                request.method,
                request.path,
                exc.status,
                exc,
                extra={"error": exc.error, "upstream": self._upstream.origin},
            )
            return error_body(exc.status, exc.error, f"{exc} ({self._upstream.origin})")

    def _reject(self, request: web.Request) -> RequestRejected | None:
        if request.method == "CONNECT":
            return malformed("CONNECT is not supported: dagcache is a reverse proxy")
        if not request.raw_path.startswith("/"):
            return malformed("the request target must be a path (origin-form), such as /api/v2/dags")
        return check_request(
            self._limits,
            raw_path=request.raw_path,
            headers=list(request.headers.items()),
            content_length=request.content_length,
        )


def reject(request: web.BaseRequest, rejection: RequestRejected) -> web.Response:
    log.info(
        "request rejected: %s %s -> %d %s",
        request.method,
        request.path[:200],
        rejection.status,
        rejection.detail,
        extra={"error": rejection.error},
    )
    response = error_body(rejection.status, rejection.error, rejection.detail)
    if rejection.status in (400, 413, 431):
        # The rest of the request may still be on the wire; do not try to read past it.
        response.force_close()
    return response

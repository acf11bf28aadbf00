"""The caching layer of the proxy: the one module that drives I/O for cached views.

Per request: normalize the target, derive the scope, :func:`proxy.policy.decide`. A pass-through goes to
the upstream untouched (and a successful write bumps the DAG's versions: read-your-writes). A cacheable
request is answered, in this order, by ``If-None-Match`` (304, nothing read), the in-process L1, the shared
store (Redis), or a fleet-wide single fill from the upstream (:func:`cache.fill_once`), stored only if the
key's versions were the same before and after the fetch (the fill guard).

Redis trouble never becomes a 5xx: a circuit breaker skips it after repeated errors, and requests that need
it pass through until it answers again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from aiohttp import web

from cache import (
    CachedResponse,
    CacheKey,
    CacheStore,
    CacheUnavailable,
    FillCoordinator,
    MemoryCacheStore,
    Outcome,
    fill_once,
)
from proxy.config import CacheConfig, ServerConfig, VersionsConfig
from proxy.negotiate import choose
from proxy.policy import Cacheable, PassThrough, decide, is_storable, write_effects
from proxy.requests import Reject, normalize_target, split_target
from proxy.routes import RouteTable
from proxy.scope import RoleMode, TokenMemo, scope_for
from proxy.upstream import Fetched, Upstream
from proxy.versions.service import VersionService

log = logging.getLogger("proxy.cache")

_STORED_HEADERS = frozenset({"content-type", "content-language"})
_CACHE_CONTROL = "no-cache, private"


class Breaker:
    """Opens after ``threshold`` consecutive Redis errors; lets one try through every ``cooldown`` seconds."""

    def __init__(self, threshold: int = 3, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def open(self) -> bool:
        if self.opened_at is None:
            return False
        if time.monotonic() - self.opened_at >= self.cooldown:
            self.opened_at = None  # half-open: the next call tries Redis again
            self.failures = self.threshold - 1
            return False
        return True

    def failed(self, exc: CacheUnavailable) -> None:
        self.failures += 1
        if self.failures >= self.threshold and self.opened_at is None:
            log.error("Redis failing (%s): serving pass-through until it recovers", exc)
            self.opened_at = time.monotonic()

    def succeeded(self) -> None:
        if self.failures or self.opened_at is not None:
            if self.failures >= self.threshold:
                log.info("Redis answers again: cache back on")
            self.failures = 0
            self.opened_at = None


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    bypass: int = 0
    not_modified: int = 0
    shared_fills: int = 0
    stored: int = 0
    upstream_fetches: int = 0


class CacheLayer:
    def __init__(
        self,
        *,
        table: RouteTable,
        versions: VersionService,
        upstream: Upstream,
        l1: MemoryCacheStore | None,
        shared: CacheStore,
        coordinator: FillCoordinator,
        config: CacheConfig,
        server: ServerConfig,
        versions_config: VersionsConfig,
        secret: bytes,
        namespace: str,
        lock_ttl: float,
    ) -> None:
        self._table = table
        self._versions = versions
        self._upstream = upstream
        self._l1 = l1
        self._shared = shared
        self._coordinator = coordinator
        self._config = config
        self._base_path = server.base_path
        self._max_version_age = versions_config.max_version_age
        self._secret = secret
        self._namespace = namespace
        self._lock_ttl = lock_ttl
        self._memo = TokenMemo()
        self._role = RoleMode(config.jwt_secret.encode(), config.jwt_audience) if config.scope == "role" else None
        self._owner = f"{os.getpid()}"
        self.breaker = Breaker()
        self.counters = CacheCounters()

    def _decide(self, request: web.Request, now: float) -> Cacheable | PassThrough:
        headers = list(request.headers.items())
        current = self._versions.current
        target = normalize_target(request.raw_path, self._base_path, self._table)
        scope = scope_for(
            headers,
            now,
            current.revoked if current is not None else {},
            self._config.refresh_window,
            self._secret,
            self._memo,
            role_mode=self._role,
        )
        return decide(
            request.method,
            target,
            scope,
            current,
            now,
            headers=headers,
            max_version_age=self._max_version_age,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # Only GET is ever cached: writes and the Execution API skip normalization and scope work entirely.
        decision = self._decide(request, time.time()) if request.method == "GET" else None
        if not isinstance(decision, Cacheable):
            self.counters.bypass += 1
            if decision is not None and log.isEnabledFor(logging.DEBUG):
                log.debug("bypass %s %s: %s", request.method, request.path[:200], decision.reason)
            response = await self._upstream.relay(request, (("X-Cache", "BYPASS"),))
            await self._after_write(request, response.status)
            return response

        parts = decision.key_parts
        key = CacheKey(self._namespace, parts.route, parts.dag_id, parts.versions, parts.scope, parts.digest)
        rendered, etag = key.render(), key.etag()
        generation = str(decision.generation)
        if _matches(request.headers.get("If-None-Match"), etag):
            self.counters.not_modified += 1
            return web.Response(status=304, headers=self._validators(etag, generation, "HIT"))

        entry = self._l1.lookup(rendered) if self._l1 is not None else None
        if entry is None and not self.breaker.open:
            try:
                entry = await self._shared.get(rendered)
                self.breaker.succeeded()
            except CacheUnavailable as exc:
                self.breaker.failed(exc)
            if entry is not None and self._l1 is not None:
                self._l1.store(rendered, entry, self._config.ttl)
        if entry is not None:
            self.counters.hits += 1
            return self._serve(request, entry, etag, generation, "HIT")
        if self.breaker.open:
            self.counters.bypass += 1
            return await self._upstream.relay(request, (("X-Cache", "BYPASS"),))
        return await self._fill(request, decision, rendered, etag, generation)

    async def _fill(
        self, request: web.Request, decision: Cacheable, rendered: str, etag: str, generation: str
    ) -> web.StreamResponse:
        fetched: list[Fetched] = []

        async def produce() -> CachedResponse | None:
            self.counters.upstream_fetches += 1
            answer = await self._upstream.fetch(request)
            fetched.append(answer)
            storable = is_storable(
                answer.status,
                answer.headers,
                len(answer.body),
                self._config.max_entry_size,
                keyed_headers=decision.route.vary,
            )
            if not storable:
                log.debug("not stored %s: %s", request.path[:200], storable)
                return None
            after = self._decide(request, time.time())
            if not isinstance(after, Cacheable) or after.key_parts != decision.key_parts:
                log.debug("not stored %s: versions moved during the fetch", request.path[:200])
                return None
            kept = tuple((k, v) for k, v in answer.headers if k.lower() in _STORED_HEADERS)
            return CachedResponse.create(
                status=answer.status,
                headers=kept,
                body=answer.body,
                key=rendered,
                etag=etag,
                stored_at=time.time(),
                level=self._config.compression_level,
            )

        entry, outcome = await fill_once(
            self._shared,
            self._coordinator,
            rendered,
            produce,
            ttl=self._config.ttl,
            lock_ttl=self._lock_ttl,
            wait_timeout=self._config.fill_wait,
            owner=self._owner,
        )
        self.counters.misses += 1
        if entry is None:
            answer = fetched[-1]
            return web.Response(
                status=answer.status,
                reason=answer.reason,
                body=None if request.method == "HEAD" else answer.body,
                headers=[*((k, v) for k, v in answer.headers if k.lower() != "content-length"), ("X-Cache", "MISS")],
            )
        if self._l1 is not None:
            self._l1.store(rendered, entry, self._config.ttl)
        if outcome is Outcome.SHARED:
            self.counters.shared_fills += 1
        else:
            self.counters.stored += 1
        return self._serve(request, entry, etag, generation, "MISS")

    def _validators(self, etag: str, generation: str, outcome: str) -> dict[str, str]:
        return {
            "ETag": etag,
            "Cache-Control": _CACHE_CONTROL,
            "Vary": "Accept-Encoding",
            "X-Cache": outcome,
            "X-Dagcache-Generation": generation,
        }

    def _serve(
        self, request: web.Request, entry: CachedResponse, etag: str, generation: str, outcome: str
    ) -> web.Response:
        body, coding = choose(entry, request.headers.get("Accept-Encoding"))
        headers = self._validators(etag, generation, outcome)
        for name, value in entry.headers:
            headers[name] = value
        if coding is not None:
            headers["Content-Encoding"] = coding
        response = web.Response(status=entry.status, headers=headers)
        if request.method == "HEAD":
            response.content_length = len(body)
        else:
            response.body = body
        return response

    async def _after_write(self, request: web.Request, status: int) -> None:
        """Read-your-writes: a successful write through the proxy bumps what it changed, at once."""
        if request.method in ("GET", "HEAD", "OPTIONS") or not 200 <= status < 300:
            return
        target = split_target(request.raw_path, self._base_path)
        if isinstance(target, Reject):
            return
        effect = write_effects(request.method, target.path, status)
        current = self._versions.current
        if effect is None or current is None:
            return
        dag_ids = list(current.dags) if effect.dag_id is None else [effect.dag_id]
        await self._versions.bump(dag_ids, listing=effect.listing)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {item.strip().removeprefix("W/") for item in header.split(",")}
    return etag in candidates or "*" in candidates

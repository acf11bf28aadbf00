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

import dataclasses
import hmac
import logging
import math
import os
import time
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

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
from proxy.airflow import routes2
from proxy.airflow.auth2 import SessionAuth
from proxy.airflow.profiles import table_for
from proxy.config import CacheConfig, ServerConfig, VersionsConfig
from proxy.errors import UpstreamError
from proxy.forwarding import BYPASS_HEADER
from proxy.hitwire import LaneAnswer, serialize_head
from proxy.metrics import note_fill
from proxy.negotiate import choose
from proxy.policy import Cacheable, PassThrough, WriteEffect, decide, is_storable, write_effects
from proxy.requests import Target, normalize_target, split_target
from proxy.routes import RouteTable
from proxy.scope import RoleMode, Scope, TokenMemo, scope_for
from proxy.upstream import Fetched, Upstream
from proxy.versions.service import VersionService

log = logging.getLogger("proxy.cache")

_HOT_ENTRIES = 8192  # decisions remembered per process (cleared with every new version map anyway)
_STORED_HEADERS = frozenset({"content-type", "content-language"})
_CACHE_CONTROL = "no-cache, private"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    stale: int = 0  # answered from a stored entry marked X-Cache: STALE (serve_stale, stale_if_error)
    admin_bypass: int = 0  # X-Dagcache-Bypass with the admin token
    shadow_hits: int = 0  # shadow mode: answered by the upstream, would have been a hit
    shadow_misses: int = 0  # shadow mode: answered by the upstream, would have been a miss


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
        admin_token: str = "",
        profile: str = "auto",
    ) -> None:
        self._table = table
        self._profile = profile  # "auto": the table of the polled schema's Airflow major (proxy.airflow.profiles)
        self._auth2 = SessionAuth(secret)  # Airflow 2 scopes: session cookie / Basic credential
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
        self._admin_token = admin_token.encode()
        self._shadow = config.mode == "shadow"
        self._hot: dict[tuple[object, ...], tuple[Cacheable, CacheKey, float]] = {}
        self._hot_map: object = None
        # The hit lane reads entries from the in-process store only (L1, or the embedded store without Redis).
        self._memory = l1 if l1 is not None else shared if isinstance(shared, MemoryCacheStore) else None
        self._lane_answers: dict[tuple[str, str | None, bool], tuple[CachedResponse | None, LaneAnswer]] = {}
        # Everything a decision reads from the request besides its target: the credential headers and
        # every header some route keys by.
        self._hot_headers = ("authorization", "cookie", *sorted({h for r in table.routes for h in r.vary}))
        self.breaker = Breaker()
        self.counters = CacheCounters()

    def _decide(self, request: web.Request, now: float) -> Cacheable | PassThrough:
        return self._decide_until(request.method, request.raw_path, request.headers, now)[0]

    def _decide_until(
        self, method: str, raw_path: str, request_headers: MultiMapping[str], now: float
    ) -> tuple[Cacheable | PassThrough, float]:
        """The decision, and until when (epoch seconds) the same request gets the same one under the same
        version map (``-inf``: do not reuse it)."""
        headers = list(request_headers.items())
        current = self._versions.current
        table = table_for(self._profile, current, self._table)
        target = normalize_target(raw_path, self._base_path, table)
        valid_until = -math.inf
        if table is routes2.TABLE:
            revoked = current.revoked if current is not None else {}
            scope = self._auth2.scope(headers, revoked, current.polled_at if current is not None else 0.0)
        else:
            scope = scope_for(
                headers,
                now,
                current.revoked if current is not None else {},
                self._config.refresh_window,
                self._secret,
                self._memo,
                role_mode=self._role,
            )
        if isinstance(scope, Scope) and current is not None:  # Airflow 2 scopes never expire by themselves
            valid_until = min(scope.valid_until, current.polled_at + self._max_version_age)
        decision = decide(
            method,
            target,
            scope,
            current,
            now,
            headers=headers,
            max_version_age=self._max_version_age,
            serve_stale=self._config.serve_stale,
        )
        return decision, valid_until

    def _hot_decision(
        self, method: str, raw_path: str, headers: MultiMapping[str], now: float
    ) -> tuple[Cacheable, CacheKey] | tuple[PassThrough, None]:
        """:meth:`_decide` plus the key, reused for repeats of one request (same target, credentials and keyed
        headers) under one version map while the credential's checks and the map's freshness still hold.

        The hit path's per-request work is then one dict lookup instead of normalizing, hashing and keying
        again. Any new map (every poll, bump or revocation) starts afresh; so does a credential that comes
        within ``refresh_window`` of its expiry, or a map that grows older than ``max_version_age``."""
        current = self._versions.current
        if current is not self._hot_map:
            self._hot.clear()
            self._lane_answers.clear()  # they hold the map's generation
            self._hot_map = current
        getall = headers.getall
        memo_key = (raw_path, *[tuple(getall(name, ())) for name in self._hot_headers])
        found = self._hot.get(memo_key)
        if found is not None and now < found[2]:
            return found[0], found[1]
        decision, valid_until = self._decide_until(method, raw_path, headers, now)
        if not isinstance(decision, Cacheable):
            return decision, None
        parts = decision.key_parts
        key = CacheKey(self._namespace, parts.route, parts.dag_id, parts.versions, parts.scope, parts.digest)
        if now < valid_until and not decision.stale:
            if len(self._hot) >= _HOT_ENTRIES:
                self._hot.clear()
            self._hot[memo_key] = (decision, key, valid_until)
        return decision, key

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._bypass_requested(request):
            self.counters.admin_bypass += 1
            return await self._pass(request, "admin bypass header")
        # Only GET is ever cached: writes and the Execution API skip normalization and scope work entirely.
        if request.method != "GET":
            return await self._pass(request, None)
        decision, key = self._hot_decision(request.method, request.raw_path, request.headers, time.time())
        if not isinstance(decision, Cacheable):
            return await self._pass(request, decision.reason)
        assert key is not None
        rendered, etag = key.render(), key.etag()
        generation = str(decision.generation)
        if self._shadow:
            return await self._shadow_handle(request, decision, key)
        if _matches(request.headers.get("If-None-Match"), etag):
            self.counters.not_modified += 1
            outcome = "STALE" if decision.stale else "HIT"
            return web.Response(status=304, headers=self._validators(etag, generation, outcome))

        entry = await self._lookup(rendered)
        if entry is not None:
            if decision.stale:
                self.counters.stale += 1
                return self._serve(request, entry, etag, generation, "STALE")
            self.counters.hits += 1
            return self._serve(request, entry, etag, generation, "HIT")
        if decision.stale:
            return await self._pass(request, "versions stale and nothing stored for them")
        if self.breaker.open:
            return await self._pass(request, "Redis circuit open")
        return await self._fill(request, decision, key)

    def _bypass_requested(self, request: web.Request) -> bool:
        offered = request.headers.get(BYPASS_HEADER)
        if offered is None:
            return False
        if self._admin_token and hmac.compare_digest(offered.encode(), self._admin_token):
            return True
        log.warning("ignoring %s: it does not carry the admin token ([admin] token)", BYPASS_HEADER)
        return False

    async def _pass(self, request: web.Request, reason: object) -> web.StreamResponse:
        """Relay to the upstream untouched (``X-Cache: BYPASS``); a successful write bumps what it changed."""
        self.counters.bypass += 1
        if reason is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("bypass %s %s: %s", request.method, request.path[:200], reason)
        if request.method == "POST":
            # Airflow 2: a logout/login drops that session cookie's scope at once — before relaying, because the
            # client may send its next request as soon as it has the answer.
            path = request.path.removeprefix(self._base_path) or "/"
            if self._auth2.observe(request.method, path, request.headers.items(), time.time()):
                self._hot.clear()  # a reused decision must not outlive the drop

        # Only a write that bumps versions waits for the bump (its small answer is buffered for that): the client may
        # send its next read as soon as the answer is complete.
        target = split_target(request.raw_path, self._base_path) if request.method not in _READS else None
        effect = write_effects(request.method, target.path, 200) if isinstance(target, Target) else None
        if effect is None:
            return await self._upstream.relay(request, (("X-Cache", "BYPASS"),))

        async def bump(status: int) -> None:
            if 200 <= status < 300:
                await self._bump(effect)

        return await self._upstream.relay(request, (("X-Cache", "BYPASS"),), before_eof=bump)

    async def _lookup(self, rendered: str) -> CachedResponse | None:
        """The entry under ``rendered`` from L1, else from the shared store (copied into L1); Redis errors
        count against the breaker and read as a miss."""
        entry = self._l1.lookup(rendered) if self._l1 is not None else None
        if entry is None and not self.breaker.open:
            try:
                entry = await self._shared.get(rendered)
                self.breaker.succeeded()
            except CacheUnavailable as exc:
                self.breaker.failed(exc)
            if entry is not None and self._l1 is not None:
                self._l1.store(rendered, entry, self._config.ttl)
        return entry

    async def _shadow_handle(self, request: web.Request, decision: Cacheable, key: CacheKey) -> web.StreamResponse:
        """Shadow mode: the upstream answers every request; the cache is filled as it would be and the would-be
        outcome is counted and shown in ``X-Dagcache-Shadow``."""
        rendered = key.render()
        entry = await self._lookup(rendered)
        would = "HIT" if entry is not None else "MISS"
        if entry is not None:
            self.counters.shadow_hits += 1
        else:
            self.counters.shadow_misses += 1
        marks = (("X-Cache", "SHADOW"), ("X-Dagcache-Shadow", would))
        if entry is not None or decision.stale or self.breaker.open:
            return await self._upstream.relay(request, marks)
        self.counters.upstream_fetches += 1
        answer = await self._upstream.fetch(request)
        stored = self._entry_from(request, decision, key, answer)
        if stored is not None:
            try:
                await self._shared.put(rendered, stored, self._config.ttl)
                self.breaker.succeeded()
            except CacheUnavailable as exc:
                self.breaker.failed(exc)
        return _answer(request, answer, marks)

    def _entry_from(
        self, request: web.Request, decision: Cacheable, key: CacheKey, answer: Fetched
    ) -> CachedResponse | None:
        """The entry to store for ``answer``, or None: not storable, or the versions moved (the fill guard)."""
        storable = is_storable(
            answer.status,
            answer.headers,
            len(answer.body),
            self._config.max_entry_size,
            keyed_headers=decision.route.vary,
            session_bound=decision.route.session_bound,
        )
        if not storable:
            log.debug("not stored %s: %s", request.path[:200], storable)
            return None
        after = self._decide(request, time.time())
        if not isinstance(after, Cacheable) or after.stale or after.key_parts != decision.key_parts:
            log.debug("not stored %s: versions moved during the fetch", request.path[:200])
            return None
        kept = tuple((k, v) for k, v in answer.headers if k.lower() in _STORED_HEADERS)
        return CachedResponse.create(
            status=answer.status,
            headers=kept,
            body=answer.body,
            key=key.render(),
            etag=key.etag(),
            stored_at=time.time(),
            level=self._config.compression_level,
        )

    async def _fill(self, request: web.Request, decision: Cacheable, key: CacheKey) -> web.StreamResponse:
        rendered, etag, generation = key.render(), key.etag(), str(decision.generation)
        fetched: list[Fetched] = []

        async def produce() -> CachedResponse | None:
            self.counters.upstream_fetches += 1
            answer = await self._upstream.fetch(request)
            fetched.append(answer)
            return self._entry_from(request, decision, key, answer)

        try:
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
        except UpstreamError:
            stale = await self._last_good(request, key)
            if stale is None:
                raise
            return stale
        self.counters.misses += 1
        note_fill(request, outcome)
        if entry is None:
            answer = fetched[-1]
            if answer.status >= 500 and (stale := await self._last_good(request, key)) is not None:
                return stale
            return _answer(request, answer, (("X-Cache", "MISS"),))
        if self._l1 is not None:
            self._l1.store(rendered, entry, self._config.ttl)
        if outcome is Outcome.SHARED:
            self.counters.shared_fills += 1
        else:
            self.counters.stored += 1
            if self._config.stale_if_error:
                await self._keep_last_good(key, entry)
        response = self._serve(request, entry, etag, generation, "MISS")
        if fetched and decision.route.session_bound:
            # Airflow 2 re-sets the session cookie (expiry refresh): the client whose request went upstream
            # gets it; the stored entry never holds it.
            for name, value in fetched[-1].headers:
                if name.lower() == "set-cookie":
                    response.headers.add("Set-Cookie", value)
        return response

    async def _keep_last_good(self, key: CacheKey, entry: CachedResponse) -> None:
        """stale_if_error: a copy of the newest stored entry under the key without versions."""
        latest = _latest(key)
        try:
            await self._shared.put(latest, dataclasses.replace(entry, key=latest), self._config.ttl)
        except CacheUnavailable as exc:
            self.breaker.failed(exc)

    async def _last_good(self, request: web.Request, key: CacheKey) -> web.Response | None:
        """stale_if_error: the last entry stored for this view and scope, served ``X-Cache: STALE``."""
        if not self._config.stale_if_error or self.breaker.open:
            return None
        try:
            entry = await self._shared.get(_latest(key))
        except CacheUnavailable as exc:
            self.breaker.failed(exc)
            return None
        if entry is None:
            return None
        self.counters.stale += 1
        log.warning("upstream failed on %s: serving the last stored entry (stale_if_error)", request.path[:200])
        generation = str(self._versions.current.generation) if self._versions.current is not None else "0"
        return self._serve(request, entry, entry.etag, generation, "STALE")

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
        return self._entry_response(request.method, entry, body, coding, etag, generation, outcome)

    def _entry_response(
        self,
        method: str,
        entry: CachedResponse,
        body: bytes,
        coding: str | None,
        etag: str,
        generation: str,
        outcome: str,
    ) -> web.Response:
        headers = self._validators(etag, generation, outcome)
        for name, value in entry.headers:
            headers[name] = value
        if coding is not None:
            headers["Content-Encoding"] = coding
        response = web.Response(status=entry.status, headers=headers)
        if method == "HEAD":
            response.content_length = len(body)
        else:
            response.body = body
        return response

    # ----- the hit lane (proxy.hitlane) ------------------------------------------------------------------------

    def lane_answer(self, raw_path: str, headers: MultiMapping[str], now: float) -> LaneAnswer | None:
        """What :meth:`handle` answers to a plain ``GET`` when that answer needs no I/O: a 304 for a matching
        ``If-None-Match``, or a HIT from the in-process store. Same decision (:meth:`_hot_decision`), headers,
        body and counters as :meth:`handle`; ``None`` for anything else (the full path answers it: bypass
        header, shadow mode, pass-through, stale versions, an entry only Redis has, a miss)."""
        memory = self._memory
        if memory is None or self._shadow or BYPASS_HEADER in headers:
            return None
        decision, key = self._hot_decision("GET", raw_path, headers, now)
        if key is None or not isinstance(decision, Cacheable) or decision.stale:
            return None
        etag = key.etag()
        if _matches(headers.get("If-None-Match"), etag):
            answer = self._lane_answer_for(etag, None, None, decision)
            if answer is not None:
                self.counters.not_modified += 1
            return answer
        entry = memory.lookup(key.render())
        if entry is None:
            return None
        answer = self._lane_answer_for(etag, entry, headers.get("Accept-Encoding"), decision)
        if answer is not None:
            self.counters.hits += 1
        return answer

    def _lane_answer_for(
        self, etag: str, entry: CachedResponse | None, accept_encoding: str | None, decision: Cacheable
    ) -> LaneAnswer | None:
        """The lane's answer with ``entry`` for this ``Accept-Encoding`` (the 304 when ``entry`` is None): the
        bytes aiohttp sends for :meth:`_entry_response`, remembered per entry and header value under the current
        version map (it is part of the headers). None if aiohttp would add a header of its own."""
        memo_key = (etag, accept_encoding, entry is None)
        found = self._lane_answers.get(memo_key)
        if found is not None and found[0] is entry:
            return found[1]
        generation = str(decision.generation)
        if entry is None:
            response = web.Response(status=304, headers=self._validators(etag, generation, "HIT"))
            body, length, outcome = b"", None, "304"
        else:
            body, coding = choose(entry, accept_encoding)
            response = self._entry_response("GET", entry, body, coding, etag, generation, "HIT")
            length, outcome = len(body), "HIT"
            if length and "Content-Type" not in response.headers:
                return None  # aiohttp would add a default Content-Type: let it answer
        head = serialize_head(response.status, response.headers.items(), length)
        if head is None:
            return None
        answer = LaneAnswer(head, body, response.status, decision.route.name, outcome, etag)
        if len(self._lane_answers) >= _HOT_ENTRIES:
            self._lane_answers.clear()
        self._lane_answers[memo_key] = (entry, answer)
        return answer

    async def _bump(self, effect: WriteEffect) -> None:
        """Read-your-writes: a successful write through the proxy bumps what it changed, at once."""
        current = self._versions.current
        if current is None:
            return
        dag_ids = list(current.dags) if effect.dag_id is None else [effect.dag_id]
        await self._versions.bump(dag_ids, listing=effect.listing)


def _latest(key: CacheKey) -> str:
    """Where stale_if_error keeps the newest entry of ``key``'s view and scope: the key without versions
    (a real key always has at least one version, so the two never collide)."""
    return CacheKey(key.namespace, key.route, key.dag, (), key.scope, key.digest).render()


def _answer(request: web.Request, answer: Fetched, marks: tuple[tuple[str, str], ...]) -> web.Response:
    """The upstream's buffered answer, as it came (its length header recomputed), with ``marks`` added."""
    return web.Response(
        status=answer.status,
        reason=answer.reason,
        body=None if request.method == "HEAD" else answer.body,
        headers=[*((k, v) for k, v in answer.headers if k.lower() != "content-length"), *marks],
    )


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {item.strip().removeprefix("W/") for item in header.split(",")}
    return etag in candidates or "*" in candidates

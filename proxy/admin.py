"""The admin listener (its own port): ``/healthz`` and ``/readyz`` for Kubernetes probes.

* ``/healthz`` (liveness) looks at this process alone — and, with ``--workers N``, at whether the worker
  processes are alive. It never touches Redis, the DB or the upstream: a liveness probe that fails when a
  dependency is slow gets pods restarted under exactly the load they exist to absorb (apache/airflow#54850).
* ``/readyz`` (readiness) answers 200 when the upstream answers HTTP at all (any status below 500 on
  ``upstream.readiness_path``); the result is cached for ``admin.readiness_cache`` seconds so probes
  from many kubelets cost the upstream at most one request per interval.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from proxy.config import Settings

Liveness = Callable[[], tuple[bool, dict[str, object]]]


def _alive() -> tuple[bool, dict[str, object]]:
    return True, {}


@dataclass
class _Probe:
    ok: bool
    detail: str
    at: float


class ReadinessProbe:
    """Checks that the upstream answers; remembers the answer for a short while."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._url = settings.upstream.url + settings.upstream.readiness_path
        self._ttl = settings.admin.readiness_cache
        self._timeout = aiohttp.ClientTimeout(total=min(settings.upstream.connect_timeout + 2.0, 10.0))
        self._last: _Probe | None = None

    async def check(self) -> _Probe:
        now = time.monotonic()
        if self._last is not None and now - self._last.at < self._ttl:
            return self._last
        try:
            async with self._session.get(self._url, allow_redirects=False, timeout=self._timeout) as resp:
                ok = resp.status < 500
                detail = f"upstream answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, detail = False, f"upstream unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
        self._last = _Probe(ok, detail, time.monotonic())
        return self._last


PROBE = web.AppKey("readiness_probe", ReadinessProbe)
LIVENESS: web.AppKey[Liveness] = web.AppKey("liveness")
ADMIN_SETTINGS = web.AppKey("admin_settings", Settings)


async def _probe_ctx(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    app[PROBE] = ReadinessProbe(session, app[ADMIN_SETTINGS])
    yield
    await session.close()


async def healthz(request: web.Request) -> web.Response:
    ok, detail = request.app[LIVENESS]()
    return web.json_response({"status": "ok" if ok else "unhealthy", **detail}, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    probe = await request.app[PROBE].check()
    return web.json_response(
        {"status": "ready" if probe.ok else "not ready", "upstream": probe.detail},
        status=200 if probe.ok else 503,
    )


def create_admin_app(settings: Settings, liveness: Liveness = _alive) -> web.Application:
    app = web.Application()
    app[ADMIN_SETTINGS] = settings
    app[LIVENESS] = liveness
    app.cleanup_ctx.append(_probe_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_admin(settings: Settings, liveness: Liveness = _alive) -> web.AppRunner:
    """Start the admin listener; the caller cleans up the returned runner."""
    runner = web.AppRunner(create_admin_app(settings, liveness), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.admin.host, settings.admin.port, reuse_address=True).start()
    return runner

"""Simulated browser users of the Airflow 2.11 UI: a login through the ``/login/`` form, then :mod:`proxy.bench.mix2`.

Airflow 2's UI views (``/object/*``) take only the ``session`` cookie (Basic auth gets a 302 to ``/login/``), and
with ``[api] auth_backends`` including ``airflow.api.auth.backend.session`` (AIRFLOW2-FACTS.md §2) ``/api/v1`` takes
it too, as the UI's own calls do. Each user logs in once and keeps its cookie: logins are rate-limited per worker
(5 per 40 s unless ``[fab] auth_rate_limited = False``).
"""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.bench import BenchError, mix2
from proxy.bench.users import Browser, Recorder


async def login(session: aiohttp.ClientSession, base_url: str, user: str, password: str) -> str:
    """Log in through the form; returns the ``Cookie`` header value (``session=...``).

    ``session`` must keep cookies (``aiohttp.CookieJar(unsafe=True)`` for an IP address): ``GET /login/`` sets the
    session the form's ``csrf_token`` belongs to."""
    base = base_url.rstrip("/")
    step = "GET /login/"
    try:
        async with session.get(base + "/login/", allow_redirects=False) as resp:
            page = await resp.text()
            if resp.status != 200:
                raise BenchError(f"GET {base}/login/ -> HTTP {resp.status} (is it an Airflow 2 webserver?)")
        token = mix2.csrf_token(page)
        if token is None:
            raise BenchError(f"{base}/login/ has no csrf_token field (is it an Airflow 2 webserver with FAB login?)")
        form = {"csrf_token": token, "username": user, "password": password}
        step = "POST /login/"
        async with session.post(base + "/login/", data=form, allow_redirects=False) as resp:
            await resp.read()
            if resp.status == 429:
                raise BenchError(
                    "login rate-limited by Airflow (5 per 40 s per worker): set [fab] auth_rate_limited = False"
                    " or simulate fewer users"
                )
            if resp.status != 302 or "/login" in resp.headers.get("Location", ""):
                raise BenchError(
                    f"login as {user!r} at {base}/login/ failed (HTTP {resp.status}): check --user/--password"
                )
            cookie = resp.cookies.get("session")
        if cookie is None or not cookie.value:
            raise BenchError(f"login as {user!r} at {base}/login/ set no session cookie")
        return f"session={cookie.value}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"cannot reach the upstream {base} ({step}): {type(exc).__name__}: {exc}".rstrip()) from None


async def cookies(base_url: str, count: int, user: str, password: str) -> list[str]:
    """One logged-in session per simulated user (``Cookie`` header values)."""
    limit = asyncio.Semaphore(4)

    async def one() -> str:
        async with (
            limit,
            aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=60)
            ) as session,
        ):
            return await login(session, base_url, user, password)

    return list(await asyncio.gather(*(one() for _ in range(count))))


class User2(Browser):
    """One browser with ``dag_id``'s DAG page (Graph tab) and the Cluster Activity page open: it loads the page, then
    requests :func:`proxy.bench.mix2.poll` every ``refresh`` seconds until ``deadline``."""

    def __init__(
        self,
        index: int,
        session: aiohttp.ClientSession,
        base_url: str,
        cookie: str,
        recorder: Recorder,
        *,
        dag_id: str,
        refresh: float = mix2.DEFAULT_REFRESH,
        num_runs: int = mix2.DEFAULT_NUM_RUNS,
    ) -> None:
        super().__init__(index, session, base_url, {"Cookie": cookie}, recorder)
        self._dag_id = dag_id
        self._refresh = refresh
        self._num_runs = num_runs

    async def run(self, deadline: float, start_delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        if start_delay > 0:
            await asyncio.sleep(start_delay)
        await self.get(mix2.page(self._dag_id))
        await self.batch(mix2.open_page(self._dag_id, self._num_runs))
        next_tick = loop.time() + self._refresh
        while next_tick < deadline:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += self._refresh
            await self.batch(mix2.poll(self._dag_id, self._num_runs))
            # React Query skips a refetch while the last one is still in flight: a late poll skips ticks
            while next_tick < loop.time():
                next_tick += self._refresh
        await asyncio.sleep(max(0.0, deadline - loop.time()))

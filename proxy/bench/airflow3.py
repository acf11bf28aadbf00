"""The bench against an Airflow 3 api-server: Bearer tokens from ``/auth/token``, the UI mix of :mod:`proxy.bench.mix`
and the state audit of :mod:`proxy.bench.auditor`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from proxy.bench import BenchError, UsageError, mix
from proxy.bench.airflow import Setup, SimulatedUser
from proxy.bench.auditor import Auditor
from proxy.bench.users import Recorder, User

if TYPE_CHECKING:
    from proxy.bench.runner import Options

DEFAULT_AUDIT_INTERVAL = 1.0


async def _login(session: aiohttp.ClientSession, upstream: str, user: str, password: str) -> str:
    try:
        async with session.post(upstream + "/auth/token", json={"username": user, "password": password}) as resp:
            payload = await resp.json(content_type=None) if resp.status in (200, 201) else None
            if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
                raise BenchError(
                    f"login as {user!r} at {upstream}/auth/token failed: HTTP {resp.status}"
                    " (is it an Airflow 3 api-server, and are --user/--password right?)"
                )
            return str(payload["access_token"])
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"cannot reach the upstream {upstream}: {type(exc).__name__}: {exc}") from None


async def _tokens(upstream: str, count: int, user: str, password: str) -> list[str]:
    """One token per simulated user (each browser logs in once; tokens live 24 h)."""
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> str:
            async with limit:
                return await _login(session, upstream, user, password)

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def _get_json(session: aiohttp.ClientSession, url: str, token: str) -> object:
    try:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise BenchError(f"GET {url} -> HTTP {resp.status}")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None


async def prepare(opts: Options, upstream: str, proxy_url: str) -> Setup:
    given = {"--dag": opts.dag, "--dags-folder": opts.dags_folder, "--airflow-python": opts.airflow_python}
    only_2 = [name for name, value in {**given, "--audit-sync": opts.audit_sync}.items() if value is not None]
    if only_2:
        raise UsageError(f"{', '.join(only_2)}: only for Airflow 2, and {upstream} is an Airflow 3 api-server")
    tokens = await _tokens(upstream, max(opts.users), opts.user, opts.password)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as probe:
        version = await _get_json(probe, upstream + "/api/v2/version", tokens[0])
        await _get_json(probe, proxy_url + "/api/v2/version", tokens[0])
        config = await _get_json(probe, upstream + "/ui/config", tokens[0])
        listing = await _get_json(probe, upstream + "/ui/dags?limit=100", tokens[0])
    refresh = opts.refresh
    if refresh is None:
        interval = config.get("auto_refresh_interval") if isinstance(config, dict) else None
        refresh = float(interval) if isinstance(interval, int | float) and interval > 0 else mix.DEFAULT_REFRESH
    dag_ids = mix.dag_ids_of(listing)

    def user(index: int, session: aiohttp.ClientSession, url: str, recorder: Recorder) -> SimulatedUser:
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        return User(index, session, url, headers, recorder, refresh=refresh, dwell=opts.dwell)

    number = version.get("version") if isinstance(version, dict) else None
    setup = Setup(
        version=str(number) if number is not None else None,
        refresh=refresh,
        dags=len(dag_ids),
        user=user,
        settle_path="/api/v2/version",
        settle_headers={"Authorization": f"Bearer {tokens[0]}"},
    )
    if opts.audit:
        dag = opts.audit_dag or next((d for d in reversed(dag_ids) if d not in mix.HEAVY_DAGS), None)
        if dag is None:
            raise BenchError("--audit: the upstream lists no DAG to change (use --audit-dag)")
        interval = opts.audit_interval if opts.audit_interval is not None else DEFAULT_AUDIT_INTERVAL
        setup.auditor = Auditor(upstream, tokens[0], dag, interval=interval, watchers=opts.audit_watchers, poll=0.05)
    return setup

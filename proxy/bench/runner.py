"""Orchestration: log in, then for each user count run interleaved rounds over the targets."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from proxy import __version__
from proxy.bench import BenchError, mix
from proxy.bench.auditor import Auditor
from proxy.bench.cpu import CpuMeter, descendants
from proxy.bench.dbstats import StatementCounter
from proxy.bench.nginx import Nginx, find_nginx, nginx_version
from proxy.bench.progress import Progress
from proxy.bench.report import Phase
from proxy.bench.users import Recorder, User
from proxy.tasks import spawn

DRAIN_GRACE = 15.0
"""Seconds a phase waits, after its end, for requests still in flight; the rest are cut and counted as errors."""


@dataclass(slots=True)
class Options:
    upstream: str
    proxy: str
    users: list[int]
    duration: float  # measured seconds per target and user count, split over the rounds
    out: Path
    rounds: int = 2
    nginx: bool = False
    nginx_ttl: float = 5.0
    db: str | None = None
    audit: bool = False
    audit_dag: str | None = None
    audit_interval: float = 1.0
    audit_watchers: int = 2
    pin: bool = False
    server_pids: list[int] = field(default_factory=list)
    upstream_pids: list[int] = field(default_factory=list)
    user: str = "admin"
    password: str = "admin"
    refresh: float | None = None
    dwell: int = 20
    settle: float = 1.0
    plots: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str


def pin(opts: Options, progress: Progress) -> int | None:
    """Pin this process to the last allowed core and ``--server-pid`` trees to the first; returns the server core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        progress.note(f"--pin: only {len(cores)} core available to this process; not pinning")
        return None
    bench_core, server_core = cores[-1], cores[0]
    os.sched_setaffinity(0, {bench_core})
    progress.note(f"--pin: load generator pinned to core {bench_core}")
    if opts.server_pids:
        for pid in descendants(opts.server_pids):
            subprocess.run(["taskset", "-a", "-cp", str(server_core), str(pid)], capture_output=True, check=False)
        progress.note(f"--pin: server processes {opts.server_pids} (and children) pinned to core {server_core}")
    else:
        progress.note(
            f"--pin: pin the servers yourself to core {server_core}, e.g. `taskset -a -cp {server_core} PID` for every"
            f" process of the api-server and of dagcache (or pass --server-pid PID)"
        )
    return server_core


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


async def run(opts: Options, progress: Progress, phases: list[Phase], meta: dict[str, object]) -> None:
    """Run the whole benchmark, appending each measured slot to ``phases`` and filling ``meta`` (so an
    interrupted run still has what it measured)."""
    server_core = pin(opts, progress) if opts.pin else None
    upstream, proxy_url = opts.upstream.rstrip("/"), opts.proxy.rstrip("/")
    meta |= {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dagcache": __version__,
        "aiohttp": aiohttp.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "upstream": upstream,
        "proxy": proxy_url,
        "users": opts.users,
        "duration_s": opts.duration,
        "rounds": opts.rounds,
        "notes": [],
    }
    notes: list[str] = meta["notes"]  # type: ignore[assignment]
    tokens = await _tokens(upstream, max(opts.users), opts.user, opts.password)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as probe:
        version = await _get_json(probe, upstream + "/api/v2/version", tokens[0])
        meta["airflow"] = version.get("version") if isinstance(version, dict) else None
        await _get_json(probe, proxy_url + "/api/v2/version", tokens[0])
        config = await _get_json(probe, upstream + "/ui/config", tokens[0])
        listing = await _get_json(probe, upstream + "/ui/dags?limit=100", tokens[0])
    refresh = opts.refresh
    if refresh is None:
        interval = config.get("auto_refresh_interval") if isinstance(config, dict) else None
        refresh = float(interval) if isinstance(interval, int | float) and interval > 0 else mix.DEFAULT_REFRESH
    meta["auto_refresh_interval_s"] = refresh
    dag_ids = mix.dag_ids_of(listing)
    meta["dags"] = len(dag_ids)

    counter: StatementCounter | None = None
    if opts.db:
        counter = StatementCounter(opts.db)
        problem = await counter.open()
        if problem:
            progress.note(f"warning: {problem}")
            notes.append(problem)
            counter = None
    cpu: CpuMeter | None = None
    if opts.upstream_pids:
        cpu = CpuMeter(opts.upstream_pids)
        problem = cpu.check()
        if problem:
            raise BenchError(f"--upstream-pid: {problem}")

    targets = [Target("direct", upstream), Target("dagcache", proxy_url)]
    nginx: Nginx | None = None
    if opts.nginx:
        binary = find_nginx()
        if binary is None:
            message = "--nginx: no nginx binary found (apt install nginx); measuring without it"
            progress.note(message)
            notes.append(message)
        else:
            nginx = Nginx(binary, upstream, opts.out / "nginx", ttl=opts.nginx_ttl, cpu=server_core)
            nginx.start()
            meta["nginx"] = nginx_version(binary)
            targets.append(Target("nginx", nginx.url))

    auditor: Auditor | None = None
    sessions = {
        t.name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=mix.BROWSER_CONNECTIONS * max(opts.users), limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
        )
        for t in targets
    }
    try:
        if opts.audit:
            dag = opts.audit_dag or next((d for d in reversed(dag_ids) if d not in mix.HEAVY_DAGS), None)
            if dag is None:
                raise BenchError("--audit: the upstream lists no DAG to change (use --audit-dag)")
            auditor = Auditor(
                upstream, tokens[0], dag, interval=opts.audit_interval, watchers=opts.audit_watchers, poll=0.05
            )
            await auditor.open()
            meta["audit_dag"] = dag
        per_round = opts.duration / opts.rounds
        for users in opts.users:
            for round_ in range(opts.rounds):
                order = targets if round_ % 2 == 0 else list(reversed(targets))
                for target in order:
                    progress.start(f"users={users} round {round_ + 1}/{opts.rounds} {target.name}")
                    phase = await _phase(
                        target,
                        users,
                        round_,
                        per_round,
                        sessions[target.name],
                        tokens,
                        refresh,
                        opts,
                        counter,
                        cpu,
                        auditor,
                        progress,
                    )
                    phases.append(phase)
                    p99 = phase.latency.p99
                    progress.finish(
                        f"{phase.requests} req in {phase.seconds:.1f} s, {phase.errors} err"
                        + (f", p99 {p99:.0f} ms" if p99 is not None else "")
                    )
                    await _settle(sessions["direct"], upstream, tokens[0], opts.settle)
    finally:
        for session in sessions.values():
            await session.close()
        if nginx is not None:
            nginx.stop()
        if auditor is not None:
            for problem in await auditor.restore():
                progress.note(f"warning: --audit restore: {problem}")
        if counter is not None:
            await counter.close()


async def _settle(session: aiohttp.ClientSession, upstream: str, token: str, pause: float) -> None:
    """Let the upstream work off what the last phase left queued: wait ``pause``, then until an
    authenticated ``/api/v2/version`` answers within half a second (at most 60 s)."""
    await asyncio.sleep(pause)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60.0
    while loop.time() < give_up:
        started = loop.time()
        try:
            async with session.get(
                upstream + "/api/v2/version",
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.5)
            continue
        if loop.time() - started < 0.5:
            return
        await asyncio.sleep(0.5)


async def _phase(
    target: Target,
    users: int,
    round_: int,
    seconds: float,
    session: aiohttp.ClientSession,
    tokens: Sequence[str],
    refresh: float,
    opts: Options,
    counter: StatementCounter | None,
    cpu: CpuMeter | None,
    auditor: Auditor | None,
    progress: Progress,
) -> Phase:
    loop = asyncio.get_running_loop()
    phase = Phase(target.name, users, round_, seconds=0.0)
    recorder = Recorder(phase)
    db_before = await counter.total() if counter is not None else None
    cpu_before = cpu.seconds() if cpu is not None else None
    start = loop.time()
    deadline = start + seconds
    tasks = [
        spawn(
            User(i, session, target.url, tokens[i], recorder, refresh=refresh, dwell=opts.dwell).run(
                deadline, start_delay=refresh * i / users
            ),
            name=f"bench-user-{i}",
        )
        for i in range(users)
    ]
    audit_task = spawn(auditor.run_phase(target.url, deadline), name="bench-audit") if auditor else None
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.25)
            progress.update(deadline - loop.time(), phase.requests, phase.errors)
            if loop.time() > deadline + DRAIN_GRACE:
                cut = recorder.in_flight
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                if cut:
                    phase.errors += cut
                    phase.requests += cut
                    phase.statuses["cut at phase end"] = cut
                break
    finally:  # interrupted: no user or watcher outlives the sessions it uses
        watched: list[asyncio.Task[Any]] = [*tasks, *([audit_task] if audit_task is not None else [])]
        leftovers = [t for t in watched if not t.done()]
        if leftovers:
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise BenchError(f"a simulated user failed: {task.exception()!r}")
    phase.seconds = loop.time() - start
    if counter is not None and db_before is not None:
        phase.db_statements = await counter.total() - db_before
    if cpu is not None and cpu_before is not None:
        phase.cpu_seconds = cpu.seconds() - cpu_before
    if audit_task is not None:
        log = await audit_task
        log.apply(phase, recorder.generation_regressions)
    else:
        phase.regressions = recorder.generation_regressions if opts.audit else None
    return phase


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

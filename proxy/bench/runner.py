"""Orchestration: find the Airflow version, log in, then for each user count run interleaved rounds over the
targets."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from proxy import __version__
from proxy.bench import BenchError, airflow2, airflow3, mix
from proxy.bench.airflow import PhaseAuditor, Setup, detect_major
from proxy.bench.cpu import CpuMeter, descendants
from proxy.bench.dbstats import StatementCounter
from proxy.bench.nginx import Nginx, find_nginx, nginx_version
from proxy.bench.progress import Progress
from proxy.bench.report import Phase
from proxy.bench.users import Recorder
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
    audit_interval: float | None = None  # None: the major version's default (1 s on Airflow 3, 20 s on 2)
    audit_watchers: int = 2
    airflow: int | None = None  # the upstream's major version; None: detect it
    dag: str | None = None  # Airflow 2: the DAG the users keep open (big_dag)
    dags_folder: Path | None = None  # Airflow 2 --audit: where the audit DAG's file goes
    airflow_python: str | None = None  # Airflow 2 --audit: Airflow's interpreter, to store that file
    audit_sync: str | None = None  # Airflow 2 --audit: or a shell command that stores it
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
    major = opts.airflow or await detect_major(upstream)
    meta["airflow_major"] = major
    if major == 2:
        setup = await airflow2.prepare(opts, upstream, proxy_url)
    else:
        setup = await airflow3.prepare(opts, upstream, proxy_url)
    meta["airflow"] = setup.version
    meta["auto_refresh_interval_s"] = setup.refresh
    meta["dags"] = setup.dags
    meta.update(setup.meta)
    notes.extend(setup.notes)

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
    if opts.nginx and major == 2:
        message = (
            "--nginx: not measured against Airflow 2, whose views answer Cache-Control: no-store and re-set the"
            " session cookie, so proxy_cache would store nothing"
        )
        progress.note(message)
        notes.append(message)
    elif opts.nginx:
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

    progress.total = len(opts.users) * opts.rounds * len(targets)
    auditor = setup.auditor
    sessions = {
        t.name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=mix.BROWSER_CONNECTIONS * max(opts.users), limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # each user sends its own credential; none is shared
        )
        for t in targets
    }
    try:
        if auditor is not None:
            await auditor.open()
            meta["audit_dag"] = auditor.dag_id
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
                        setup,
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
                    await _settle(sessions["direct"], upstream + setup.settle_path, setup.settle_headers, opts.settle)
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


async def _settle(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], pause: float) -> None:
    """Let the upstream work off what the last phase left queued: wait ``pause``, then until an
    authenticated cheap request (``/api/v2/version``, ``/api/v1/version``) answers within half a second
    (at most 60 s)."""
    await asyncio.sleep(pause)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60.0
    while loop.time() < give_up:
        started = loop.time()
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
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
    setup: Setup,
    opts: Options,
    counter: StatementCounter | None,
    cpu: CpuMeter | None,
    auditor: PhaseAuditor | None,
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
            setup.user(i, session, target.url, recorder).run(deadline, start_delay=setup.refresh * i / users),
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

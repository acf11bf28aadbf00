"""The bench against an Airflow 2 webserver: users logged in through ``/login/`` (:mod:`proxy.bench.users2`), the
mix of :mod:`proxy.bench.mix2` on one DAG, and the definition audit of :mod:`proxy.bench.auditor2`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp

from proxy.bench import BenchError, UsageError, mix2
from proxy.bench.airflow import Setup, SimulatedUser
from proxy.bench.audit2 import DEFAULT_DAG as DEFAULT_AUDIT_DAG, DEFAULT_INTERVAL, valid_dag_id
from proxy.bench.auditor2 import Auditor2
from proxy.bench.sync2 import PythonSyncer, ShellSyncer, Syncer
from proxy.bench.users import Recorder
from proxy.bench.users2 import User2, cookies

if TYPE_CHECKING:
    from proxy.bench.runner import Options

CONVERGENCE_NOTE = (
    "dagcache holds a changed DAG's versions for [versions] upstream_convergence (12 s by default on Airflow 2: the"
    " workers' 10 s min_serialized_dag_fetch_interval plus a margin), so its staleness for a definition change is"
    " that window plus a poll, by design: it never stores what a stale worker renders"
)


def check_audit_options(opts: Options) -> None:
    """``--audit`` on Airflow 2 needs a DAGs folder and a way to store the DAG file; :class:`UsageError` if not."""
    if opts.dags_folder is None:
        raise UsageError("--audit on Airflow 2 needs --dags-folder (the webserver's DAGs folder)")
    if (opts.airflow_python is None) == (opts.audit_sync is None):
        raise UsageError("--audit on Airflow 2 needs either --airflow-python or --audit-sync (one of them)")
    if opts.airflow_python is not None and shutil.which(opts.airflow_python) is None:
        raise UsageError(f"--airflow-python {opts.airflow_python}: no such executable")
    if opts.audit_dag is not None and not valid_dag_id(opts.audit_dag):
        raise UsageError(f"--audit-dag must be letters, digits, '_', '-' or '.', got {opts.audit_dag!r}")


async def _get(session: aiohttp.ClientSession, url: str, cookie: str) -> tuple[int, bytes]:
    try:
        async with session.get(url, headers={"Cookie": cookie}, allow_redirects=False) as resp:
            return resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None


async def prepare(opts: Options, upstream: str, proxy_url: str) -> Setup:
    if opts.audit:
        check_audit_options(opts)
    watchers = opts.audit_watchers if opts.audit else 0
    jar = await cookies(upstream, max(opts.users) + watchers, opts.user, opts.password)
    user_cookies, watcher_cookies = jar[: max(opts.users)], jar[max(opts.users) :]
    dag_id = opts.dag or mix2.DEFAULT_DAG
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=60)
    ) as probe:
        status, body = await _get(probe, upstream + "/api/v1/version", jar[0])
        version = mix2.json_of(body) if status == 200 else None
        status, _ = await _get(probe, proxy_url + "/api/v1/version", jar[0])
        if status != 200:
            raise BenchError(f"GET {proxy_url}/api/v1/version -> HTTP {status}")
        status, body = await _get(probe, upstream + "/api/v1/dags?limit=1", jar[0])
        listing = mix2.json_of(body) if status == 200 else None
        status, _ = await _get(probe, upstream + f"/api/v1/dags/{quote(dag_id, safe='')}", jar[0])
        if status != 200:
            raise BenchError(f"the upstream has no DAG {dag_id!r} (HTTP {status}): pass --dag")
        status, body = await _get(probe, upstream + mix2.page(dag_id), jar[0])
        if status != 200:
            raise BenchError(f"GET {upstream}{mix2.page(dag_id)} -> HTTP {status}")
    settings = mix2.page_settings(body.decode(errors="replace"))
    refresh = opts.refresh or settings.refresh or mix2.DEFAULT_REFRESH
    num_runs = settings.num_runs or mix2.DEFAULT_NUM_RUNS

    def user(index: int, session: aiohttp.ClientSession, url: str, recorder: Recorder) -> SimulatedUser:
        return User2(
            index, session, url, user_cookies[index], recorder, dag_id=dag_id, refresh=refresh, num_runs=num_runs
        )

    total = listing.get("total_entries") if isinstance(listing, dict) else None
    setup = Setup(
        version=mix2.version_of(version),
        refresh=refresh,
        dags=int(total) if isinstance(total, int) else 0,
        user=user,
        settle_path="/api/v1/version",
        settle_headers={"Cookie": jar[0]},
        meta={"dag": dag_id, "num_runs": num_runs},
    )
    if opts.audit:
        assert opts.dags_folder is not None
        log = opts.out / "audit-sync.log"
        syncer: Syncer = (
            PythonSyncer(opts.airflow_python, log) if opts.airflow_python else ShellSyncer(str(opts.audit_sync), log)
        )
        interval = opts.audit_interval if opts.audit_interval is not None else DEFAULT_INTERVAL
        setup.auditor = Auditor2(
            upstream,
            watcher_cookies,
            opts.audit_dag or DEFAULT_AUDIT_DAG,
            Path(opts.dags_folder),
            syncer,
            interval=interval,
            poll=0.05,
            num_runs=num_runs,
        )
        setup.meta["audit_interval_s"] = interval
        setup.notes.append(CONVERGENCE_NOTE)
    return setup

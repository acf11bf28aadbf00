"""``dagcache bench``: arguments, validation and the output files."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.bench import BenchError, UsageError, mix
from proxy.bench.progress import Progress
from proxy.bench.report import Phase, client_regressions, markdown, ratios, rows, to_json

if TYPE_CHECKING:
    from proxy.bench.runner import Options

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", required=True, help="the Airflow api-server (3) or webserver (2), measured directly")
    p.add_argument("--proxy", required=True, help="dagcache in front of that same Airflow")
    p.add_argument("--airflow", help="the upstream's Airflow major version, 2 or 3 (default: detected)")
    p.add_argument("--dag", help="Airflow 2: the DAG whose grid and graph the users keep open (big_dag)")
    p.add_argument("--nginx", action="store_true", help="also measure nginx proxy_cache (needs the nginx binary)")
    p.add_argument("--users", default="10,50,200", help="simulated users per step, comma-separated (10,50,200)")
    p.add_argument("--duration", default="30s", help="measured time per target and user count (30s)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds the duration is split into (2)")
    p.add_argument("--out", default="bench-out", help="directory for results.md, results.json and the PNGs")
    p.add_argument("--db", help="Airflow's metadata DB URL (PostgreSQL) for pg_stat_statements statement counts")
    p.add_argument(
        "--upstream-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="count this process tree's CPU (the api-server's parent PID); repeatable",
    )
    p.add_argument(
        "--audit",
        action="store_true",
        help="change DAG state through Airflow while load runs; count regressions and staleness",
    )
    p.add_argument(
        "--audit-dag",
        help="Airflow 3: the DAG --audit pauses and triggers (default: a small one); Airflow 2: the id of the DAG"
        " --audit writes, changes and deletes (dagcache_bench_audit)",
    )
    p.add_argument(
        "--audit-interval",
        help="Airflow 3: time between two --audit changes (1s); Airflow 2: how long each definition change is"
        " watched before the next (20s)",
    )
    p.add_argument(
        "--dags-folder", help="Airflow 2 --audit: the webserver's DAGs folder (the audit DAG's file goes there)"
    )
    p.add_argument(
        "--airflow-python",
        metavar="PYTHON",
        help="Airflow 2 --audit: Airflow's python, to store the audit DAG's file in the metadata DB as the DAG"
        " processor does; runs with this environment (AIRFLOW_HOME, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, ...)",
    )
    p.add_argument(
        "--audit-sync",
        metavar="CMD",
        help="Airflow 2 --audit, instead of --airflow-python: a shell command that stores {file} (its path; {name}:"
        " its name) in the metadata DB",
    )
    p.add_argument("--pin", action="store_true", help="pin the load generator to one core, servers to another")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="with --pin: pin this process tree to the server core; repeatable",
    )
    p.add_argument("--user", default="admin", help="Airflow user the simulated browsers log in as (admin)")
    p.add_argument("--password", default="admin", help="its password (admin)")
    p.add_argument(
        "--refresh", help="UI auto-refresh interval (default: the upstream's, from /ui/config on 3, the DAG page on 2)"
    )
    p.add_argument("--nginx-ttl", default="5s", help="nginx proxy_cache_valid for 200 responses (whole seconds; 5s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")


def _options(args: argparse.Namespace) -> Options:
    # runner is imported lazily: it pulls in aiohttp and asyncpg
    from proxy.bench.runner import Options

    try:
        users = mix.parse_users(args.users)
        duration = mix.parse_duration(args.duration)
        audit_interval = mix.parse_duration(args.audit_interval) if args.audit_interval else None
        nginx_ttl = mix.parse_duration(args.nginx_ttl)
        refresh = mix.parse_duration(args.refresh) if args.refresh else None
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if args.rounds < 1:
        raise BenchError(f"--rounds must be at least 1, got {args.rounds}")
    for name in ("upstream", "proxy"):
        url = getattr(args, name)
        if not url.startswith(("http://", "https://")):
            raise BenchError(f"--{name} must be an http(s):// URL, got {url!r}")
    if args.server_pid and not args.pin:
        raise BenchError("--server-pid only makes sense with --pin")
    if args.airflow not in (None, "2", "3"):
        raise BenchError(f"--airflow must be 2 or 3, got {args.airflow!r}")
    airflow = int(args.airflow) if args.airflow else None
    only_2 = [
        f"--{n.replace('_', '-')}" for n in ("dag", "dags_folder", "airflow_python", "audit_sync") if getattr(args, n)
    ]
    if only_2 and airflow == 3:
        raise BenchError(f"{', '.join(only_2)}: only for Airflow 2")
    audit_only = [o for o in only_2 if o != "--dag"]
    if audit_only and not args.audit:
        raise BenchError(f"{', '.join(audit_only)}: only with --audit")
    return Options(
        upstream=args.upstream,
        proxy=args.proxy,
        users=users,
        duration=duration,
        out=Path(args.out),
        rounds=args.rounds,
        nginx=args.nginx,
        nginx_ttl=nginx_ttl,
        db=args.db,
        audit=args.audit,
        audit_dag=args.audit_dag,
        audit_interval=audit_interval,
        pin=args.pin,
        server_pids=args.server_pid,
        upstream_pids=args.upstream_pid,
        user=args.user,
        password=args.password,
        refresh=refresh,
        plots=not args.no_plots,
        airflow=airflow,
        dag=args.dag,
        dags_folder=Path(args.dags_folder) if args.dags_folder else None,
        airflow_python=args.airflow_python,
        audit_sync=args.audit_sync,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``dagcache bench``; every failure is one line on stderr."""
    try:
        return _run(args)
    except BenchError as exc:
        print(f"dagcache bench: {exc}", file=sys.stderr)
        return EXIT_FAILED if not isinstance(exc, UsageError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("dagcache bench: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # the last resort of a command line tool: one line, never a traceback
        print(f"dagcache bench: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)
        if opts.audit and opts.airflow == 2:
            from proxy.bench.airflow2 import check_audit_options

            check_audit_options(opts)
        if opts.plots:
            from proxy.bench.plots import check_matplotlib

            check_matplotlib()
    except BenchError as exc:
        raise UsageError(str(exc)) from None
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {str(opts.out)!r}: {exc.strerror}") from None

    from proxy.bench.runner import run as run_bench

    total = len(opts.users) * opts.rounds * (3 if opts.nginx and opts.airflow != 2 else 2)  # the runner corrects it
    progress = Progress(total)
    phases: list[Phase] = []
    meta: dict[str, object] = {}
    try:
        asyncio.run(run_bench(opts, progress, phases, meta))
    except (KeyboardInterrupt, BenchError) as exc:
        if phases:  # keep what was measured
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            meta.setdefault("notes", [])
            if isinstance(meta["notes"], list):
                meta["notes"].append(f"incomplete run ({reason}): only the slots measured before are shown")
            _write(opts, phases, meta, quiet=True)
        raise
    _write(opts, phases, meta)
    return EXIT_OK


def _write(opts: Options, phases: list[Phase], meta: dict[str, object], *, quiet: bool = False) -> None:
    table = rows(phases)
    text = markdown(table, ratios(phases), audit=opts.audit, clients=client_regressions(phases))
    header = (
        f"dagcache bench, {meta.get('date')}: Airflow {meta.get('airflow')}, dagcache {meta.get('dagcache')}"
        + (f", nginx {meta['nginx']}" if "nginx" in meta else "")
        + f"; {meta.get('machine')}; users {','.join(map(str, opts.users))}, {opts.duration:g} s per target and"
        f" user count in {opts.rounds} interleaved rounds\n\n"
    )
    raw_notes = meta.get("notes")
    notes = "".join(f"\nNote: {n}\n" for n in raw_notes) if isinstance(raw_notes, list) else ""
    (opts.out / "results.md").write_text(header + text + notes)
    (opts.out / "results.json").write_text(to_json(phases, meta, audit=opts.audit))
    written = []
    if opts.plots:
        from proxy.bench.plots import plot

        written = plot(table, opts.out, f"Airflow {meta.get('airflow')}")
    files = ["results.md", "results.json", *(p.name for p in written)]
    if not quiet:
        sys.stdout.write(header + text + notes)
    print(f"written to {opts.out}/: {', '.join(files)}", file=sys.stderr)

"""``dagcache bench``: arguments, validation and the output files."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.bench import BenchError, mix
from proxy.bench.progress import Progress
from proxy.bench.report import Phase, markdown, ratios, rows, to_json

if TYPE_CHECKING:
    from proxy.bench.runner import Options

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", required=True, help="the Airflow 3 api-server, measured directly")
    p.add_argument("--proxy", required=True, help="dagcache in front of that same api-server")
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
    p.add_argument("--audit-dag", help="the DAG --audit pauses/unpauses and triggers (default: a small one)")
    p.add_argument("--audit-interval", default="1s", help="time between two --audit changes (whole seconds; 1s)")
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
    p.add_argument("--refresh", help="UI auto-refresh interval (default: the upstream's /ui/config value)")
    p.add_argument("--nginx-ttl", default="5s", help="nginx proxy_cache_valid for 200 responses (whole seconds; 5s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")


def _options(args: argparse.Namespace) -> Options:
    # runner is imported lazily: it pulls in aiohttp and asyncpg
    from proxy.bench.runner import Options

    try:
        users = mix.parse_users(args.users)
        duration = mix.parse_duration(args.duration)
        audit_interval = mix.parse_duration(args.audit_interval)
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


class UsageError(BenchError):
    """Bad arguments (exit code 2)."""


def _run(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)
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

    total = len(opts.users) * opts.rounds * (3 if opts.nginx else 2)
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
    text = markdown(table, ratios(phases), audit=opts.audit)
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

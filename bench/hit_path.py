"""Cache hits against the direct upstream, side by side in one run, on a real Airflow 3 api-server.

Starts (all throwaway, removed at the end): a PostgreSQL server with ``pg_stat_statements`` preloaded, a
Redis server, a real Airflow 3.3 api-server (the test harness's venv; ``big_dag`` has 1,000 tasks and gets
``--runs`` finished runs) and one ``dagcache serve`` worker in front of it. Then, for each view:

* **peak**: closed-loop load with ``--connections`` connections for ``--duration`` seconds, first against
  Airflow directly, then through dagcache (every request a HIT after one warm-up request): requests/s, p50
  and p99 latency, and metadata-DB statements per request (``pg_stat_statements`` ``sum(calls)`` delta of the
  whole server over the window, divided by the requests answered; dagcache's own version polls included);
* **half load**: open-loop load through dagcache at half of its measured peak, latency counted from each
  request's scheduled send time (no coordinated omission): p50/p99 there.

The load generator is `wrk` when installed (``apt install wrk``; it drives more load than Python can on a
small machine), else a Python aiohttp closed loop in its own process; the open-loop phase always uses the
Python generator. Load generator, dagcache and Airflow share the machine: on 2 cores every figure is bounded
by that; the ratios are what to compare.

    python -m bench.hit_path [--duration 10] [--connections 16] [--runs 10] [--out bench/results/hit_path.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.airflow.harness import AirflowInstance
from tests.servers import free_port, postgres_server, redis_server, wait_port

VIEWS = {
    "structure_data (1,000 tasks)": "/ui/structure/structure_data?dag_id=big_dag&external_dependencies=false",
    "grid/runs": "/ui/grid/runs/big_dag?limit=10&order_by=-run_after",
}


@dataclass
class Result:
    target: str
    view: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    statements: int
    statements_per_request: float
    hit_ratio: float | None = None
    offered_rps: float | None = None  # open loop: the scheduled rate (rps is what was achieved)


# ----- load generation ----------------------------------------------------------------------------------


@dataclass
class Raw:
    latencies: list[float]
    errors: int
    hits: int
    seconds: float


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100); 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def _closed_loop(url: str, headers: dict[str, str], connections: int, duration: float) -> Raw:
    latencies: list[float] = []
    errors = 0
    hits = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors, hits
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                        hits += resp.headers.get("X-Cache") == "HIT"
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return Raw(latencies, errors, hits, elapsed)


async def _open_loop(url: str, headers: dict[str, str], rate: float, duration: float) -> Raw:
    """Requests sent on a fixed schedule over persistent connections, each connection taking every
    ``_OPEN_CONNECTIONS``-th slot; latency counts from the scheduled send time, so a slow answer delays (and
    is charged to) the requests queued behind it. A lean HTTP/1.1 client: aiohttp's own overhead would make
    the generator, not the proxy, the bottleneck on a small machine."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    start = clock() + 0.5

    async def connection(first: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(first, total, _OPEN_CONNECTIONS):
                scheduled = start + i / rate
                if (delay := scheduled - clock()) > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(clock() - scheduled)
                errors += head[9:12] != b"200"
        finally:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(min(_OPEN_CONNECTIONS, total))))
    return Raw(latencies, errors, 0, clock() - start)


_OPEN_CONNECTIONS = 32
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


def _run_in_process(kind: str, url: str, headers: dict[str, str], arg: float, duration: float) -> Raw:
    """Run a load phase in a separate process, so the generator never shares this process's core time."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        result: Raw = pool.apply(_phase, (kind, url, headers, arg, duration))
    return result


def _phase(kind: str, url: str, headers: dict[str, str], arg: float, duration: float) -> Raw:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        if kind == "closed":
            return runner.run(_closed_loop(url, headers, int(arg), duration))
        return runner.run(_open_loop(url, headers, arg, duration))


_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(s|m)")
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def _wrk(url: str, headers: dict[str, str], connections: int, duration: float) -> dict[str, float]:
    command = ["wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{int(duration)}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {q: float(v) * unit[u] for q, v, u in _WRK_LATENCY.findall(out)}
    total = _WRK_TOTAL.search(out)
    if total is None or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    seconds = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    errors = _WRK_ERRORS.search(out)
    return {
        "requests": int(total.group(1)),
        "seconds": seconds,
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "errors": int(errors.group(1)) if errors else 0,
    }


# ----- the metadata DB's statement counter ----------------------------------------------------------------


def statements(db_url: str) -> int:
    """``sum(calls)`` over ``pg_stat_statements``: every statement the server has run (all databases)."""
    sql = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
    out = subprocess.run(["psql", "-qAt", "-d", db_url, "-c", sql], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


# ----- the stack ----------------------------------------------------------------------------------------


def dagcache_config(airflow: AirflowInstance, redis_url: str, port: int, admin: int) -> str:
    """The benchmarks' ``dagcache serve`` configuration: one worker in front of ``airflow``, access log off."""
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = 1\n'
        f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n'
        f'[upstream]\nurl = "{airflow.base_url}"\n'
        f'[database]\nurl = "{airflow.db_url}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        '[log]\nlevel = "warning"\naccess_log = false\n'
    )


@contextmanager
def dagcache_serve(config: Path, port: int, log: Path, prefix: tuple[str, ...] = ()) -> Iterator[int]:
    """``dagcache serve --config config`` (after ``prefix``, e.g. ``taskset``) until the block ends; its pid."""
    dagcache = shutil.which("dagcache") or str(Path(sys.executable).with_name("dagcache"))
    proc = subprocess.Popen([*prefix, dagcache, "serve", "--config", str(config)], stderr=log.open("w"))
    try:
        wait_port(port, timeout=60)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def dagcache_proxy(airflow: AirflowInstance, redis_url: str, workdir: Path) -> Iterator[str]:
    port, admin = free_port(), free_port()
    config = workdir / "dagcache.toml"
    config.write_text(dagcache_config(airflow, redis_url, port, admin))
    with dagcache_serve(config, port, workdir / "dagcache.log"):
        yield f"http://127.0.0.1:{port}"


def measure(
    target: str, view: str, url: str, headers: dict[str, str], admin_url: str, args: argparse.Namespace
) -> Result:
    before = statements(admin_url)
    if shutil.which("wrk") and not args.python_loadgen:
        got = _wrk(url, headers, args.connections, args.duration)
        after = statements(admin_url)
        requests_ = int(got["requests"])
        hit_ratio = None
        errors, seconds, p50, p99 = int(got["errors"]), got["seconds"], got["p50_ms"], got["p99_ms"]
    else:
        raw = _run_in_process("closed", url, headers, args.connections, args.duration)
        after = statements(admin_url)
        latencies = sorted(raw.latencies)
        requests_ = len(latencies)
        hit_ratio = raw.hits / requests_ if requests_ else 0.0
        errors, seconds = raw.errors, raw.seconds
        p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    done = max(requests_ - errors, 1)
    return Result(
        target,
        view,
        requests_,
        errors,
        seconds,
        requests_ / seconds,
        p50,
        p99,
        after - before,
        (after - before) / done,
        hit_ratio,
    )


def half_load(view: str, url: str, headers: dict[str, str], rate: float, args: argparse.Namespace) -> Result:
    raw = _run_in_process("open", url, headers, rate, args.duration)
    latencies = sorted(raw.latencies)
    n = len(latencies)
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    achieved = n / raw.seconds
    if achieved < 0.95 * rate:
        print(
            f"  warning: the generator reached {achieved:,.0f} of {rate:,.0f} req/s: latencies include its lag",
            file=sys.stderr,
        )
    return Result("dagcache @ half peak", view, n, raw.errors, raw.seconds, achieved, p50, p99, 0, 0.0, None, rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections (default 16)")
    parser.add_argument(
        "--runs", type=int, default=10, help="finished big_dag runs to create (default 10: a full default grid)"
    )
    parser.add_argument(
        "--half-load-cap",
        type=float,
        default=50_000.0,
        help="upper bound of the open-loop rate in requests/s (default 50,000; it warns when the Python generator "
        "falls short of the rate)",
    )
    parser.add_argument("--python-loadgen", action="store_true", help="use the Python generator even if wrk exists")
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    args = parser.parse_args(argv)

    results: list[Result] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dagcache-hitbench-")))
        admin_url = stack.enter_context(postgres_server())
        redis_url = stack.enter_context(redis_server())
        print("starting Airflow 3 (big_dag: 1,000 tasks) ...", file=sys.stderr)
        airflow = stack.enter_context(AirflowInstance(3, admin_url, workdir / "airflow", workers=2))
        airflow.create_runs("big_dag", ["success"] * args.runs)
        db_admin = airflow.db_url  # statements are counted server-wide; any database of it works
        proxy = stack.enter_context(dagcache_proxy(airflow, redis_url, workdir))
        # As a browser asks: compressed (Airflow compresses each answer; dagcache serves precompressed bytes).
        headers = {"Authorization": f"Bearer {airflow.token('admin')}", "Accept-Encoding": "gzip"}
        for view, path in VIEWS.items():
            direct = measure("direct Airflow", view, airflow.base_url + path, headers, db_admin, args)
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: {headers['Authorization']}", proxy + path],
                check=False,
            )
            time.sleep(0.5)  # the warm-up fill is stored
            hit = measure("dagcache (hit)", view, proxy + path, headers, db_admin, args)
            rate = min(hit.rps / 2, args.half_load_cap)
            half = half_load(view, proxy + path, headers, rate, args)
            results += [direct, hit, half]
            print(f"  {view}: done", file=sys.stderr)

    _print(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "loadgen": _loadgen(args),
            "duration": args.duration,
            "connections": args.connections,
        }
        args.out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    return 0


def _loadgen(args: argparse.Namespace) -> str:
    return "wrk" if shutil.which("wrk") and not args.python_loadgen else "python-aiohttp"


def _print(results: list[Result]) -> None:
    print("| view | target | requests/s | p50 ms | p99 ms | errors | DB statements/request |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        per = "" if r.target.endswith("half peak") else f"{r.statements_per_request:.4f}"
        print(f"| {r.view} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {per} |")
    print()
    for view in VIEWS:
        direct = next(r for r in results if r.view == view and r.target == "direct Airflow")
        hit = next(r for r in results if r.view == view and r.target == "dagcache (hit)")
        half = next(r for r in results if r.view == view and r.target.endswith("half peak"))
        print(
            f"{view}: hits {hit.rps / direct.rps:,.0f}x direct requests/s (target >= 100x); "
            f"p99 at {half.rps:,.0f} req/s (offered {half.offered_rps or 0:,.0f}, half peak) {half.p99_ms:.2f} ms "
            "(target < 5 ms); "
            f"{hit.statements_per_request:.4f} DB statements/request vs {direct.statements_per_request:.1f} direct "
            "(target < 0.01)"
        )


if __name__ == "__main__":
    sys.exit(main())

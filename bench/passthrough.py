"""Pass-through overhead of dagcache: direct upstream vs through ``dagcache serve``, in the same run.

The traffic that always passes through (Airflow 3's Execution API that task workers call on the api-server
port, writes, logs) must cost little. This starts an upstream stand-in and ``dagcache serve`` (one worker)
as separate processes, then alternates rounds of load against each target (to cancel machine drift) and
prints req/s and latency percentiles with the proxied/direct ratio.

    python -m bench.passthrough [--seconds 5] [--rounds 3] [--concurrency 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
BODY_64K = json.dumps({"dags": [{"dag_id": f"dag_{i:04d}", "is_paused": False, "tags": []} for i in range(1100)]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


async def _state(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True})


async def _dags(_: web.Request) -> web.Response:
    return web.Response(text=BODY_64K, content_type="application/json")


def serve_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_patch("/execution/task-instances/{id}/state", _state)
    app.router.add_get("/api/v2/dags", _dags)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclass
class Round:
    target: str
    scenario: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


SCENARIOS = {
    "execution PATCH (small JSON)": ("PATCH", "/execution/task-instances/0193/state", b'{"state": "success"}'),
    "GET 64 KB JSON": ("GET", "/api/v2/dags", None),
}


async def _load(base: str, scenario: str, seconds: float, concurrency: int) -> Round:
    method, path, body = SCENARIOS[scenario]
    result = Round(target=base, scenario=scenario)
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=connector) as client:

        async def user() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with client.request(method, base + path, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            result.errors += 1
                except aiohttp.ClientError:
                    result.errors += 1
                result.latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - began
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _summary(rounds: list[Round]) -> dict[str, float]:
    latencies = [x for r in rounds for x in r.latencies]
    total_time = sum(r.seconds for r in rounds)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / total_time,
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": sum(r.errors for r in rounds),
    }


async def _run(args: argparse.Namespace, direct: str, proxied: str) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in SCENARIOS:
        per_target: dict[str, list[Round]] = {"direct": [], "dagcache": []}
        await _load(direct, scenario, 0.5, args.concurrency)  # warm-up both
        await _load(proxied, scenario, 0.5, args.concurrency)
        for index in range(args.rounds):
            order = [("direct", direct), ("dagcache", proxied)]
            if index % 2:
                order.reverse()
            for name, base in order:
                per_target[name].append(await _load(base, scenario, args.seconds, args.concurrency))
        results[scenario] = {name: _summary(rounds) for name, rounds in per_target.items()}
    return results


def _table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| scenario | target | req/s | p50 ms | p99 ms | errors | req/s vs direct | added p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, targets in results.items():
        base = targets["direct"]
        for name, row in targets.items():
            ratio = row["rps"] / base["rps"]
            added = row["p50_ms"] - base["p50_ms"]
            lines.append(
                f"| {scenario} | {name} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['errors']:.0f} | {ratio:.2f} | {added:+.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round per target")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, help="also write the raw figures as JSON here")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return

    up_port, proxy_port, admin_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "DAGCACHE_UPSTREAM__URL": f"http://127.0.0.1:{up_port}",
        "DAGCACHE_SERVER__HOST": "127.0.0.1",
        "DAGCACHE_SERVER__PORT": str(proxy_port),
        "DAGCACHE_ADMIN__PORT": str(admin_port),
        "DAGCACHE_LOG__ACCESS_LOG": "false",
    }
    with tempfile.TemporaryFile() as log:
        upstream = subprocess.Popen([sys.executable, "-m", "bench.passthrough", "--serve-upstream", str(up_port)],
                                    cwd=REPO, stdout=log, stderr=log)
        proxy = subprocess.Popen([sys.executable, "-m", "proxy", "serve"], cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            _wait(up_port)
            _wait(proxy_port)
            results = asyncio.run(_run(args, f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"))
        finally:
            for proc in (proxy, upstream):
                proc.terminate()
                proc.wait(30)
    print(f"dagcache pass-through overhead, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"concurrency {args.concurrency}, {args.rounds}x{args.seconds:.0f} s per target\n")
    print(_table(results))
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()

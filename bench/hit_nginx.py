"""Hit throughput of one dagcache worker against nginx ``proxy_cache``, one core each, in the same run.

Starts (all throwaway, removed at the end): PostgreSQL with ``pg_stat_statements``, Redis, a real Airflow 3.3
api-server (the test harness's venv; ``big_dag`` has 1,000 tasks and ``--runs`` finished runs), then in front
of that same Airflow:

* ``nginx``: ``proxy_cache`` with one worker pinned to core 0 (``worker_cpu_affinity``), the configuration of
  :mod:`proxy.bench.nginxconf` (key = URL + ``Authorization`` + ``Cookie``), entries valid for a day, so once
  warmed every request is a cache HIT;
* ``dagcache``: one ``dagcache serve`` worker (``workers = 1``, uvloop, access log off like nginx's) started
  under ``taskset -c 0``; and one more such worker per ``--variant`` (extra config, e.g.
  ``--variant lane:server.fast_lane=true``), each measured in turn on the same core.

Every target is warmed and checked (``X-Cache: HIT``, same decompressed JSON) before it is measured. Then
``--rounds`` interleaved rounds (the order of targets alternates between rounds): per round, view and target,
one ``wrk`` run pinned to core 1 (``taskset -c 1 wrk -t1 -c N -d S --latency``) with the same headers a browser
sends for a JSON view (``Authorization: Bearer``, ``Accept-Encoding: gzip``): both proxies then answer the same
gzip representation of the same JSON.

Reported per target and view: requests/s, p50/p99 (medians over rounds), metadata-DB statements per request
(0 for pure hits, but for the version polls), the server's CPU use (its process tree, from ``/proc``) and
requests per CPU-second, and the ratios dagcache/nginx of both, computed *within each round* (median; min and
max for requests/s). The machine has 2 cores and other work may run on it: the per-round ratios are what to
compare, not the absolute figures; requests per CPU-second holds up better when another process takes part of
core 0. The last column keeps only the rounds in which both the target and nginx used at least 90 % of core 0:
there the servers, not the load generator starved of core 1 nor another process, set the pace.
``busy0``/``busy1`` (share of each core busy during a run, all processes) and ``wrk_cpu`` (share of a core used
by wrk) in the JSON say what else ran.

    python -m bench.hit_nginx [--rounds 5] [--duration 5] [--connections 32] [--variant NAME:SECTION.KEY=VALUE]
                              [--out bench/results/hit_nginx.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.hit_path import VIEWS, dagcache_config, dagcache_serve, statements
from proxy.bench.cpu import CpuMeter
from proxy.bench.nginx import Nginx, find_nginx, nginx_version
from tests.airflow.harness import AirflowInstance
from tests.servers import free_port, postgres_server, redis_server

SERVER_CPU = 0
WRK_CPU = 1
NGINX = "nginx"


# ----- pure: wrk's output, the variants, the summary ---------------------------------------------------------


@dataclass(frozen=True)
class WrkFigures:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(ms|s|m)\b")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(text: str) -> WrkFigures:
    """The figures of one ``wrk --latency`` run from its output; :class:`ValueError` if they are missing."""
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {q: float(v) * unit[u] for q, v, u in _WRK_LATENCY.findall(text)}
    total = _WRK_TOTAL.search(text)
    if total is None or "50" not in pct or "99" not in pct:
        raise ValueError(f"not the output of wrk --latency:\n{text[:2000]}")
    seconds = float(total.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    non_2xx = _WRK_NON_2XX.search(text)
    sock = _WRK_SOCKET.search(text)
    return WrkFigures(
        requests=int(total.group(1)),
        seconds=seconds,
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
    )


def parse_variant(text: str) -> tuple[str, str]:
    """``NAME:SECTION.KEY=VALUE[,SECTION.KEY=VALUE...]`` -> (name, TOML lines). Values are TOML literals
    (``true``, ``5``, ``"text"``)."""
    name, sep, settings = text.partition(":")
    if not sep or not name or name == NGINX or not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"a variant is NAME:SECTION.KEY=VALUE[,...], got {text!r}")
    sections: dict[str, list[str]] = {}
    for item in settings.split(","):
        dotted, eq, value = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not eq or not dot or not section or not key or not value.strip():
            raise ValueError(f"a variant setting is SECTION.KEY=VALUE, got {item!r}")
        sections.setdefault(section, []).append(f"{key} = {value.strip()}")
    return "dagcache " + name, "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


@dataclass(frozen=True)
class Sample:
    round: int
    view: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu: float  # share of one core used by the server's process tree during the run
    busy0: float  # share of core 0 busy (every process)
    busy1: float  # share of core 1 busy (every process)
    wrk_cpu: float  # share of one core used by wrk
    statements: int  # metadata-DB statements (server-wide) during the run


@dataclass(frozen=True)
class Summary:
    view: str
    target: str
    rounds: int
    rps: float  # medians over rounds
    p50_ms: float
    p99_ms: float
    server_cpu: float
    errors: int  # total
    statements_per_request: float
    ratio: float | None  # median over rounds of this target's rps / nginx's rps in the same round
    ratio_min: float | None
    ratio_max: float | None
    ratios: list[float] = field(default_factory=list)
    per_cpu_second: float = 0.0  # requests per CPU-second of the server (median over rounds)
    cpu_ratio: float | None = None  # median over rounds of per_cpu_second / nginx's, same round
    # Rounds in which both this target and nginx kept core 0 busy (server CPU >= QUIET): neither the load
    # generator nor another process bounded them. The median ratio over those rounds, and how many there were.
    quiet_ratio: float | None = None
    quiet_rounds: int = 0


QUIET = 0.9


def _per_cpu(sample: Sample) -> float:
    return sample.rps / sample.server_cpu if sample.server_cpu > 0 else 0.0


def summarize(samples: Sequence[Sample], baseline: str = NGINX) -> list[Summary]:
    """Per (view, target): medians over rounds, and the same-round ratio to ``baseline``."""
    out: list[Summary] = []
    views = list(dict.fromkeys(s.view for s in samples))
    targets = list(dict.fromkeys(s.target for s in samples))
    for view in views:
        base = {s.round: s.rps for s in samples if s.view == view and s.target == baseline}
        base_cpu = {s.round: _per_cpu(s) for s in samples if s.view == view and s.target == baseline}
        quiet_base = {s.round for s in samples if s.view == view and s.target == baseline and s.server_cpu >= QUIET}
        for target in targets:
            mine = [s for s in samples if s.view == view and s.target == target]
            if not mine:
                continue
            ratios = [s.rps / base[s.round] for s in mine if base.get(s.round)] if target != baseline else []
            cpu_ratios = [_per_cpu(s) / base_cpu[s.round] for s in mine if base_cpu.get(s.round)]
            quiet = [s.rps / base[s.round] for s in mine if s.round in quiet_base and s.server_cpu >= QUIET]
            requests = sum(s.requests for s in mine)
            out.append(
                Summary(
                    view=view,
                    target=target,
                    rounds=len(mine),
                    rps=statistics.median(s.rps for s in mine),
                    p50_ms=statistics.median(s.p50_ms for s in mine),
                    p99_ms=statistics.median(s.p99_ms for s in mine),
                    server_cpu=statistics.median(s.server_cpu for s in mine),
                    errors=sum(s.errors for s in mine),
                    statements_per_request=sum(s.statements for s in mine) / requests if requests else 0.0,
                    ratio=statistics.median(ratios) if ratios else None,
                    ratio_min=min(ratios) if ratios else None,
                    ratio_max=max(ratios) if ratios else None,
                    ratios=[round(r, 3) for r in ratios],
                    per_cpu_second=statistics.median(_per_cpu(s) for s in mine),
                    cpu_ratio=statistics.median(cpu_ratios) if cpu_ratios and target != baseline else None,
                    quiet_ratio=statistics.median(quiet) if quiet and target != baseline else None,
                    quiet_rounds=len(quiet) if target != baseline else len(quiet_base),
                )
            )
    return out


def table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| view | target | requests/s | p50 ms | p99 ms | errors | DB stmts/req | server CPU | requests/CPU-s "
        "| ratio to nginx, requests/s (min-max) | ratio, requests/CPU-s | ratio, quiet rounds (n) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries:
        ratio = "1.00" if s.ratio is None else f"**{s.ratio:.2f}** ({s.ratio_min:.2f}-{s.ratio_max:.2f})"
        cpu_ratio = "1.00" if s.cpu_ratio is None else f"{s.cpu_ratio:.2f}"
        quiet = "1.00" if s.ratio is None else "–" if s.quiet_ratio is None else f"{s.quiet_ratio:.2f}"
        lines.append(
            f"| {s.view} | {s.target} | {s.rps:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.errors} "
            f"| {s.statements_per_request:.5f} | {s.server_cpu:.0%} | {s.per_cpu_second:,.0f} | {ratio} | {cpu_ratio} "
            f"| {quiet} ({s.quiet_rounds}) |"
        )
    return "\n".join(lines)


def round_order(targets: Sequence[str], round_: int) -> list[str]:
    """The order of targets in round ``round_``: rotated by one each round, so each target runs first, last
    and in between equally often (drift in background load spreads over all of them)."""
    k = round_ % len(targets) if targets else 0
    return [*targets[k:], *targets[:k]]


# ----- I/O: core load, wrk, the two proxies ------------------------------------------------------------------


def _core_ticks() -> dict[int, tuple[int, int]]:
    """``{core: (busy, total)}`` jiffies from ``/proc/stat``."""
    out: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def _busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int) -> float:
    if core not in before or core not in after:
        return 0.0
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return busy / total if total else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, headers: dict[str, str], connections: int, duration: float) -> tuple[WrkFigures, float]:
    """One wrk run pinned to :data:`WRK_CPU`; its figures and the share of a core it used."""
    command = ["taskset", "-c", str(WRK_CPU), "wrk", "--latency", "-t", "1", "-c", str(connections)]
    command += ["-d", f"{duration:g}s", "--timeout", "5s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    before, started = _children_cpu(), time.perf_counter()
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out), (_children_cpu() - before) / (time.perf_counter() - started)


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def warm(name: str, url: str, headers: dict[str, str], attempts: int = 20) -> tuple[dict[str, str], bytes, bytes]:
    """Request ``url`` until it answers a 200 ``X-Cache: HIT``; that answer's headers, body as sent (without
    its chunked framing) and decoded body."""
    last: dict[str, str] = {}
    for _ in range(attempts):
        status, got, body = fetch(url, headers)
        last = got
        if status == 200 and got.get("x-cache") == "HIT":
            return got, body, gzip.decompress(body) if got.get("content-encoding") == "gzip" else body
        time.sleep(0.3)
    raise RuntimeError(f"{name} does not answer HITs for {url}: last headers {last}")


@contextmanager
def dagcache_worker(airflow: AirflowInstance, redis_url: str, workdir: Path, extra: str) -> Iterator[tuple[str, int]]:
    """One ``dagcache serve`` worker pinned to :data:`SERVER_CPU`: (its URL, its pid)."""
    port, admin = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "dagcache.toml"
    config.write_text(_merge_toml(dagcache_config(airflow, redis_url, port, admin), extra))
    with dagcache_serve(config, port, workdir / "dagcache.log", ("taskset", "-c", str(SERVER_CPU))) as pid:
        yield f"http://127.0.0.1:{port}", pid


def _merge_toml(base: str, extra: str) -> str:
    """``base`` with the ``key = value`` lines of ``extra`` set in the ``[section]`` of the same name (a key
    already there takes the new value; a new section is appended)."""
    blocks: dict[str, dict[str, str]] = {}
    for text in (base, extra):
        section = ""
        for line in text.splitlines():
            if line.startswith("[") and line.endswith("]"):
                section = line
                blocks.setdefault(section, {})
            elif line.strip():
                blocks.setdefault(section, {})[line.partition("=")[0].strip()] = line
    return "".join(f"{s}\n" + "\n".join(lines.values()) + "\n" for s, lines in blocks.items())


def _machine() -> dict[str, object]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions: dict[str, str] = {}
    for module in ("aiohttp", "uvloop", "multidict", "yarl"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = "-"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "wrk": (wrk.stdout or wrk.stderr).split(" Copyright")[0].strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--runs", type=int, default=10, help="finished big_dag runs to create (default 10)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:SECTION.KEY=VALUE[,...]",
        help="one more dagcache worker with these settings, measured beside the default one",
    )
    parser.add_argument("--no-default", action="store_true", help="measure only the --variant workers")
    parser.add_argument("--out", type=Path, help="write every sample and the summary as JSON here")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    if not args.no_default:
        variants.insert(0, ("dagcache", ""))
    if not variants:
        parser.error("nothing to compare with nginx")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt install {'wrk' if tool == 'wrk' else 'util-linux'})")
    nginx_bin = find_nginx()
    if nginx_bin is None:
        parser.error("nginx is not installed (apt install nginx)")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs 2 cores: one for the server, one for wrk")

    samples: list[Sample] = []
    bodies: dict[str, dict[str, str]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dagcache-hitnginx-")))
        admin_url = stack.enter_context(postgres_server())
        redis_url = stack.enter_context(redis_server())
        print("starting Airflow 3 (big_dag: 1,000 tasks) ...", file=sys.stderr)
        airflow = stack.enter_context(AirflowInstance(3, admin_url, workdir / "airflow", workers=2))
        airflow.create_runs("big_dag", ["success"] * args.runs)
        headers = {"Authorization": f"Bearer {airflow.token('admin')}", "Accept-Encoding": "gzip"}

        nginx = Nginx(nginx_bin, airflow.base_url, workdir / "nginx", ttl=86400, cpu=SERVER_CPU)
        nginx.start()
        stack.callback(nginx.stop)
        assert nginx.pid is not None
        targets: dict[str, tuple[str, int]] = {NGINX: (nginx.url, nginx.pid)}
        for i, (name, extra) in enumerate(variants):
            targets[name] = stack.enter_context(dagcache_worker(airflow, redis_url, workdir / f"dagcache{i}", extra))

        for view, path in VIEWS.items():
            reference: bytes | None = None
            for name, (url, _) in targets.items():
                got, sent, body = warm(name, url + path, headers)
                decoded = json.loads(body)
                if reference is None:
                    reference = body
                elif decoded != json.loads(reference):
                    print(f"  warning: {name} answers other JSON than nginx for {view}", file=sys.stderr)
                framing = "chunked" if got.get("transfer-encoding") == "chunked" else "content-length"
                shape = f"{len(sent)} bytes {got.get('content-encoding', 'identity')} ({framing}), {len(body)} decoded"
                bodies.setdefault(view, {})[name] = shape
                print(f"  {view} via {name}: HIT, {shape}", file=sys.stderr)

        names = list(targets)
        for round_ in range(args.rounds):
            for view, path in VIEWS.items():
                for name in round_order(names, round_):
                    url, pid = targets[name]
                    warm(name, url + path, headers, attempts=5)  # still a HIT (nginx: not expired)
                    meter = CpuMeter([pid])
                    cpu0, cores0, stmts0 = meter.seconds(), _core_ticks(), statements(airflow.db_url)
                    started = time.perf_counter()
                    figures, wrk_cpu = run_wrk(url + path, headers, args.connections, args.duration)
                    wall = time.perf_counter() - started
                    cpu1, cores1, stmts1 = meter.seconds(), _core_ticks(), statements(airflow.db_url)
                    sample = Sample(
                        round=round_,
                        view=view,
                        target=name,
                        rps=figures.requests / figures.seconds,
                        p50_ms=figures.p50_ms,
                        p99_ms=figures.p99_ms,
                        requests=figures.requests,
                        errors=figures.non_2xx + figures.socket_errors,
                        server_cpu=(cpu1 - cpu0) / wall,
                        busy0=_busy(cores0, cores1, SERVER_CPU),
                        busy1=_busy(cores0, cores1, WRK_CPU),
                        wrk_cpu=wrk_cpu,
                        statements=stmts1 - stmts0,
                    )
                    samples.append(sample)
                    print(
                        f"  round {round_ + 1}/{args.rounds} {view} {name}: {sample.rps:,.0f} req/s, "
                        f"server {sample.server_cpu:.0%} of core {SERVER_CPU} (busy {sample.busy0:.0%}), "
                        f"wrk {sample.wrk_cpu:.0%} (core {WRK_CPU} busy {sample.busy1:.0%})",
                        file=sys.stderr,
                    )
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": _machine(),
            "nginx": nginx_version(nginx_bin),
            "airflow": airflow.version,
            "rounds": args.rounds,
            "duration": args.duration,
            "connections": args.connections,
            "headers": {"Authorization": "Bearer <JWT>", "Accept-Encoding": headers["Accept-Encoding"]},
            "variants": {name: extra for name, extra in variants},
            "bodies": bodies,
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        }

    summaries = summarize(samples)
    print(table(summaries))
    for view, sizes in bodies.items():
        print(f"{view}: bodies {sizes}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "summary": [asdict(s) for s in summaries], "samples": [asdict(s) for s in samples]}
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark figures: per-phase raw results, per-(target, users) rows, markdown and JSON (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from proxy.bench.stats import Latency, median_ratio, percentile, rate


@dataclass(slots=True)
class Phase:
    """One target measured at one user count in one round."""

    target: str
    users: int
    round: int
    seconds: float
    requests: int = 0
    errors: int = 0
    hits: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, completed requests
    statuses: dict[str, int] = field(default_factory=dict)
    db_statements: int | None = None
    cpu_seconds: float | None = None
    regressions: int | None = None
    staleness: list[float] | None = None  # seconds, one per observed change
    stale_missed: int | None = None  # changes never seen fresh within their window
    audit_failed: int | None = None  # --audit changes whose API call failed (not counted above)
    audit_clients: dict[str, int] | None = None  # --audit regressions per watcher (Airflow 2)
    audit_unprimed: int | None = None  # Airflow 2 --audit pairs whose first change the webserver never showed

    @property
    def latency(self) -> Latency:
        return Latency.of(self.latencies)


@dataclass(frozen=True, slots=True)
class Row:
    """The figures of one target at one user count, all rounds pooled."""

    target: str
    users: int
    rounds: int
    seconds: float
    requests: int
    rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    hit_ratio: float | None
    db_per_s: float | None
    db_per_request: float | None
    cpu_percent: float | None
    regressions: int | None
    stale_p50_ms: float | None
    stale_p99_ms: float | None
    stale_missed: int | None


def _sum_optional(values: Iterable[float | None]) -> float | None:
    items = list(values)
    if not items or any(v is None for v in items):
        return None
    return sum(v for v in items if v is not None)


def summarize(phases: Sequence[Phase]) -> Row:
    """Pool the rounds of one (target, users): counts add up, latencies are pooled, rates are totals over
    total time. DB and CPU figures are ``None`` unless every round has them."""
    if not phases:
        raise ValueError("no phases to summarize")
    first = phases[0]
    seconds = sum(p.seconds for p in phases)
    requests = sum(p.requests for p in phases)
    latency = Latency.of([s for p in phases for s in p.latencies])
    db = _sum_optional(p.db_statements for p in phases)
    cpu = _sum_optional(p.cpu_seconds for p in phases)
    regressions = _sum_optional(p.regressions for p in phases)
    audited = all(p.staleness is not None for p in phases)
    staleness_ms = [s * 1000.0 for p in phases for s in (p.staleness or [])]
    missed = _sum_optional(p.stale_missed for p in phases)
    return Row(
        target=first.target,
        users=first.users,
        rounds=len(phases),
        seconds=seconds,
        requests=requests,
        rps=rate(requests, seconds),
        p50_ms=latency.p50,
        p95_ms=latency.p95,
        p99_ms=latency.p99,
        errors=sum(p.errors for p in phases),
        hit_ratio=sum(p.hits for p in phases) / requests if requests else None,
        db_per_s=rate(db, seconds) if db is not None else None,
        db_per_request=db / requests if db is not None and requests else None,
        cpu_percent=100.0 * cpu / seconds if cpu is not None and seconds > 0 else None,
        regressions=int(regressions) if regressions is not None else None,
        stale_p50_ms=percentile(staleness_ms, 50) if audited else None,
        stale_p99_ms=percentile(staleness_ms, 99) if audited else None,
        stale_missed=int(missed) if missed is not None else None,
    )


def rows(phases: Sequence[Phase]) -> list[Row]:
    """One :class:`Row` per (users, target), in the order the targets were first measured."""
    groups: dict[tuple[int, str], list[Phase]] = {}
    for phase in phases:
        groups.setdefault((phase.users, phase.target), []).append(phase)
    return [summarize(group) for _, group in sorted(groups.items(), key=lambda kv: kv[0][0])]


@dataclass(frozen=True, slots=True)
class Ratio:
    """``candidate`` against ``baseline`` at one user count: medians of the per-round ratios."""

    baseline: str
    candidate: str
    users: int
    rps: float | None  # candidate / baseline
    p99: float | None  # candidate / baseline
    db_per_s: float | None  # baseline / candidate ("x fewer statements")


def ratios(phases: Sequence[Phase], baseline: str = "direct") -> list[Ratio]:
    """Pair each target's round ``r`` with the baseline's round ``r`` at the same user count."""
    by_key: dict[tuple[int, str], dict[int, Phase]] = {}
    for phase in phases:
        by_key.setdefault((phase.users, phase.target), {})[phase.round] = phase
    out: list[Ratio] = []
    for (users, target), rounds in sorted(by_key.items(), key=lambda kv: kv[0][0]):
        base = by_key.get((users, baseline))
        if target == baseline or base is None:
            continue
        common = sorted(set(rounds) & set(base))
        b = [base[r] for r in common]
        c = [rounds[r] for r in common]
        out.append(
            Ratio(
                baseline=baseline,
                candidate=target,
                users=users,
                rps=median_ratio([rate(p.requests, p.seconds) for p in b], [rate(p.requests, p.seconds) for p in c]),
                p99=median_ratio([p.latency.p99 for p in b], [p.latency.p99 for p in c]),
                db_per_s=median_ratio(
                    [rate(p.db_statements, p.seconds) if p.db_statements is not None else None for p in c],
                    [rate(p.db_statements, p.seconds) if p.db_statements is not None else None for p in b],
                ),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ClientRegressions:
    """``--audit`` regressions of each watcher of one target at one user count, all rounds added up."""

    target: str
    users: int
    clients: dict[str, int]


def client_regressions(phases: Sequence[Phase]) -> list[ClientRegressions]:
    """Per (users, target) in the order of :func:`rows`, for the phases that counted per client."""
    groups: dict[tuple[int, str], dict[str, int]] = {}
    for phase in phases:
        if phase.audit_clients is None:
            continue
        counts = groups.setdefault((phase.users, phase.target), {})
        for client, n in phase.audit_clients.items():
            counts[client] = counts.get(client, 0) + n
    return [ClientRegressions(t, u, c) for (u, t), c in sorted(groups.items(), key=lambda kv: kv[0][0])]


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("target", "target"),
    ("users", "users"),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("errors", "errors"),
    ("hit_ratio", "hit ratio"),
    ("db_per_s", "DB stmt/s"),
    ("db_per_request", "DB stmt/req"),
    ("cpu_percent", "upstream CPU %"),
)
_AUDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("regressions", "regressions"),
    ("stale_p50_ms", "stale p50 ms"),
    ("stale_p99_ms", "stale p99 ms"),
    ("stale_missed", "changes not seen"),
)


def columns(*, audit: bool) -> tuple[tuple[str, str], ...]:
    """(field, heading) of the result table."""
    return _COLUMNS + (_AUDIT_COLUMNS if audit else ())


def fmt(value: object) -> str:
    """A table cell: ``–`` for unmeasured, integers as is, ratios to 2 decimals, other floats to 3 figures."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def markdown(
    table: Sequence[Row],
    ratio_rows: Sequence[Ratio] = (),
    *,
    audit: bool = False,
    clients: Sequence[ClientRegressions] = (),
) -> str:
    """The result table (the paired ratios and the regressions per audit client, when there are any) as GitHub
    markdown."""
    cols = columns(audit=audit)
    lines = [
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "|".join("---" if name == "target" else "---:" for name, _ in cols) + "|",
    ]
    for row in table:
        lines.append("| " + " | ".join(fmt(getattr(row, name)) for name, _ in cols) + " |")
    if ratio_rows:
        lines += [
            "",
            "Paired ratios (median over rounds of each round's ratio; same user count, adjacent slots):",
            "",
            "| target vs baseline | users | req/s ratio | p99 ratio | DB stmt/s: baseline ÷ target |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in ratio_rows:
            lines.append(
                f"| {r.candidate} vs {r.baseline} | {r.users} | {fmt(r.rps)} | {fmt(r.p99)} | {fmt(r.db_per_s)} |"
            )
    if clients:
        lines += [
            "",
            "Regressions per audit client (rounds added up):",
            "",
            "| target | users | regressions per client |",
            "|---|---:|---|",
        ]
        for c in clients:
            counts = ", ".join(f"{name}: {n}" for name, n in c.clients.items()) or "–"
            lines.append(f"| {c.target} | {c.users} | {counts} |")
    return "\n".join(lines) + "\n"


def to_json(phases: Sequence[Phase], meta: dict[str, object], *, audit: bool) -> str:
    """Everything: the run's metadata, the pooled rows, the ratios and every phase's raw figures
    (latencies in ms, rounded to 10 µs)."""
    raw = []
    for p in phases:
        item = asdict(p)
        item["latencies_ms"] = [round(s * 1000.0, 2) for s in item.pop("latencies")]
        if p.staleness is not None:
            item["staleness_ms"] = [round(s * 1000.0, 2) for s in item.pop("staleness")]
        else:
            item.pop("staleness")
        item["p50_ms"], item["p95_ms"], item["p99_ms"] = p.latency.p50, p.latency.p95, p.latency.p99
        raw.append(item)
    document = {
        "meta": meta,
        "columns": [name for name, _ in columns(audit=audit)],
        "rows": [asdict(r) for r in rows(phases)],
        "ratios": [asdict(r) for r in ratios(phases)],
        "audit_clients": [asdict(c) for c in client_regressions(phases)],
        "phases": raw,
    }
    return json.dumps(document, indent=2, sort_keys=False)

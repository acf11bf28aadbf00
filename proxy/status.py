"""The admin listener's status: readiness and the status page, computed from metric samples. Pure.

Everything here reads the samples a :class:`prometheus_client.CollectorRegistry` exposes (the process's own
registry, or the supervisor's view over every worker), so the page and ``/readyz`` say the same as
``/metrics`` whichever process serves them.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import Metric

from proxy.metrics import FROM_CACHE, OUTCOMES

#: Outcomes that looked the key up (the denominator of the hit ratio).
LOOKUPS = frozenset({"HIT", "STALE", "304", "MISS"})


@dataclass(frozen=True)
class Samples:
    """Samples by name: ``{name: [(labels, value), ...]}`` (``*_created`` samples dropped)."""

    by_name: Mapping[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def of(cls, families: Iterable[Metric]) -> Samples:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in families:
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    by_name[sample.name].append((dict(sample.labels), float(sample.value)))
        return cls(dict(by_name))

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.by_name.get(name, []) if all(labels.get(k) == x for k, x in match.items()))

    def value(self, name: str) -> float | None:
        """The single value of an unlabelled gauge (the aggregated one), or ``None``."""
        values = [v for _, v in self.by_name.get(name, [])]
        return values[0] if values else None


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative ``(le, count)`` buckets: linear within the bucket; a rank in the
    ``+Inf`` bucket is reported as the largest finite bound. ``None`` without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _buckets(samples: Samples, name: str, **match: str) -> list[tuple[float, float]]:
    merged: dict[float, float] = defaultdict(float)
    for labels, value in samples.by_name.get(name + "_bucket", []):
        if all(labels.get(k) == x for k, x in match.items()):
            merged[float(labels["le"])] += value
    return list(merged.items())


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


# -- readiness -------------------------------------------------------------------------------------


def pass_through_reason(*, database_url: str, cache_mode: str) -> str | None:
    """Why this deployment serves pass-through only (so readiness does not need versions), or ``None``."""
    if not database_url:
        return "pass-through mode: no [database] url"
    if cache_mode == "off":
        return "pass-through mode: cache.mode = 'off'"
    return None


def versions_readiness(polled_at: float | None, now: float, max_age: float) -> tuple[bool, str]:
    """Fresh versions: a map whose poll is at most ``max_age`` old (in every worker: the stalest one counts)."""
    if not polled_at:
        return False, "no version map yet"
    age = max(0.0, now - polled_at)
    if age > max_age:
        return False, f"versions stale: polled {age:.1f} s ago (versions.max_version_age = {max_age:g} s)"
    return True, f"versions fresh: polled {age:.1f} s ago"


def readiness(
    upstream_ok: bool,
    upstream_detail: str,
    *,
    pass_through: str | None,
    samples: Samples,
    now: float,
    max_age: float,
    require_versions: bool = False,
) -> tuple[bool, dict[str, object]]:
    """``(ready, JSON body)``: ready when the upstream answers. Without fresh versions the proxy still serves,
    every view passing through, and the body declares ``"mode": "pass-through"``; only ``require_versions``
    (``[admin] ready_requires_versions``) makes that not ready. Every replica shares the DB and Redis, so by
    default a DB or Redis outage must not take the whole fleet out of its Service (nothing would answer)."""
    if pass_through is not None:
        versions_ok, versions_detail = True, f"not needed ({pass_through})"
    else:
        versions_ok, versions_detail = versions_readiness(
            samples.value("dagcache_version_polled_at_seconds"), now, max_age
        )
    ok = upstream_ok and (versions_ok or not require_versions)
    return ok, {
        "status": "ready" if ok else "not ready",
        "mode": "pass-through" if pass_through is not None or not versions_ok else "cache",
        "upstream": upstream_detail,
        "versions": versions_detail,
    }


# -- the status summary ------------------------------------------------------------------------------


@dataclass
class RouteRow:
    route: str
    requests: int
    outcomes: dict[str, int]
    hit_ratio: float | None
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class Status:
    mode: str
    requests: int
    outcomes: dict[str, int]
    hit_ratio: float | None
    served_from_cache_bytes: int
    latency_ms: dict[str, dict[str, float | None]]
    routes: list[RouteRow]
    upstream: dict[str, Any]
    versions: dict[str, Any]
    redis: dict[str, Any]
    l1: dict[str, Any]
    process: dict[str, object] = field(default_factory=dict)
    #: shadow mode: what the cache would have answered ({"HIT": n, "MISS": m}) and the would-be hit ratio
    shadow: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    samples: Samples,
    *,
    now: float,
    mode: str,
    leader: str | None = None,
    redis_state: str = "not configured",
    process: Mapping[str, object] | None = None,
) -> Status:
    """The status page's numbers from metric samples (``leader``/``redis_state`` from the admin's own look)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for labels, value in samples.by_name.get("dagcache_requests_total", []):
        outcome = labels.get("outcome", "BYPASS")
        counts[labels.get("route", "other")][outcome] = counts[labels.get("route", "other")].get(outcome, 0) + int(
            value
        )
    outcomes = dict.fromkeys(OUTCOMES, 0)
    rows = []
    for route, by_outcome in counts.items():
        for outcome, n in by_outcome.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        total = sum(by_outcome.values())
        buckets = _buckets(samples, "dagcache_request_seconds", route=route)
        rows.append(
            RouteRow(
                route=route,
                requests=total,
                outcomes=by_outcome,
                hit_ratio=_hit_ratio(by_outcome),
                p50_ms=_ms(quantile(0.5, buckets)),
                p99_ms=_ms(quantile(0.99, buckets)),
            )
        )
    rows.sort(key=lambda row: (-row.requests, row.route))
    latency = {
        path: {
            "p50": _ms(quantile(0.5, _buckets(samples, "dagcache_request_seconds", outcome=outcome))),
            "p99": _ms(quantile(0.99, _buckets(samples, "dagcache_request_seconds", outcome=outcome))),
        }
        for path, outcome in (("hit", "HIT"), ("miss", "MISS"), ("bypass", "BYPASS"))
    }
    polled_at = samples.value("dagcache_version_polled_at_seconds") or None
    polls = samples.total("dagcache_version_polls_total", result="ok")
    statements = samples.total("dagcache_version_poll_statements_total")
    poll_seconds = samples.total("dagcache_version_poll_seconds_total")
    upstream_total = samples.total("dagcache_upstream_requests_total")
    upstream_errors = samples.total("dagcache_upstream_requests_total", status="error")
    breaker = samples.value("dagcache_redis_breaker_open")
    return Status(
        mode=mode,
        requests=sum(outcomes.values()),
        outcomes=outcomes,
        hit_ratio=_hit_ratio(outcomes),
        served_from_cache_bytes=int(samples.total("dagcache_cache_served_bytes_total")),
        latency_ms=latency,
        routes=rows,
        upstream={
            "requests": int(upstream_total),
            "errors": int(upstream_errors),
            "p50_ms": _ms(quantile(0.5, _buckets(samples, "dagcache_upstream_seconds"))),
            "p99_ms": _ms(quantile(0.99, _buckets(samples, "dagcache_upstream_seconds"))),
        },
        versions={
            "known": polled_at is not None,
            "dags": int(samples.value("dagcache_version_dags") or 0),
            "generation": int(samples.value("dagcache_version_generation") or 0),
            "age_seconds": round(max(0.0, now - polled_at), 1) if polled_at is not None else None,
            "leader_here": int(samples.value("dagcache_version_leader") or 0),
            "leader": leader,
            "polls": int(polls),
            "poll_errors": int(samples.total("dagcache_version_polls_total", result="error")),
            "last_poll_ms": _ms(samples.value("dagcache_version_last_poll_seconds")) if polls else None,
            "avg_poll_ms": _ms(poll_seconds / polls) if polls else None,
            "statements_per_poll": round(statements / polls, 2) if polls else None,
        },
        redis={
            "state": redis_state,
            "breaker_open": bool(breaker),
            "errors": int(samples.total("dagcache_redis_errors_total")),
            "get_p50_ms": _ms(quantile(0.5, _buckets(samples, "dagcache_redis_seconds", op="get"))),
        },
        l1={
            "bytes": int(samples.value("dagcache_l1_bytes") or 0),
            "max_bytes": int(samples.value("dagcache_l1_max_bytes") or 0),
            "entries": int(samples.value("dagcache_l1_entries") or 0),
            "evictions": int(samples.total("dagcache_l1_evictions_total")),
        },
        process={"serving processes": int(samples.total("dagcache_process_up")), **(process or {})},
        shadow=_shadow(samples),
    )


def _shadow(samples: Samples) -> dict[str, Any]:
    hits, misses = (
        samples.total("dagcache_shadow_total", would="HIT"),
        samples.total("dagcache_shadow_total", would="MISS"),
    )
    if not hits + misses:
        return {}
    return {"HIT": int(hits), "MISS": int(misses), "would_be_hit_ratio": _ratio(hits, hits + misses)}


def _hit_ratio(by_outcome: Mapping[str, int]) -> float | None:
    hits = sum(n for outcome, n in by_outcome.items() if outcome in FROM_CACHE)
    return _ratio(hits, sum(n for outcome, n in by_outcome.items() if outcome in LOOKUPS))


# -- HTML ----------------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:11em}
.card b{display:block;font-size:1.6em}.muted{color:#777}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.bad{color:#b00020}.good{color:#0a7d32}
"""


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _pct(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.1f}%"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render_html(status: Status, *, refresh: int = 5, title: str = "dagcache") -> str:
    """The status page: self-contained (no external asset), refreshes itself every ``refresh`` seconds."""
    e = html.escape
    v, r, u, l1 = status.versions, status.redis, status.upstream, status.l1
    cards = [
        ("hit-ratio", "Hit ratio", _pct(status.hit_ratio)),
        ("requests", "Requests", _fmt(status.requests)),
        ("served", "Served from cache", _bytes(status.served_from_cache_bytes)),
        ("hit-p50", "HIT p50", _fmt(status.latency_ms["hit"]["p50"], " ms")),
        ("miss-p50", "MISS p50", _fmt(status.latency_ms["miss"]["p50"], " ms")),
        ("upstream-errors", "Upstream errors", f"{_fmt(u['errors'])} / {_fmt(u['requests'])}"),
    ]
    if status.shadow:
        cards.insert(1, ("shadow-hit-ratio", "Shadow: would-be hit ratio", _pct(status.shadow["would_be_hit_ratio"])))
    card_html = "".join(
        f'<div class="card"><span class="muted">{e(t)}</span><b id="{i}">{e(x)}</b></div>' for i, t, x in cards
    )
    shown = [o for o in OUTCOMES if status.outcomes.get(o)] or ["HIT", "MISS", "BYPASS"]
    head = "".join(f"<th>{e(o)}</th>" for o in shown)
    body = (
        "".join(
            f'<tr class="route" data-route="{e(row.route)}"><td>{e(row.route)}</td><td>{_fmt(row.requests)}</td>'
            + "".join(f"<td>{_fmt(row.outcomes.get(o, 0))}</td>" for o in shown)
            + f"<td>{_pct(row.hit_ratio)}</td><td>{_fmt(row.p50_ms)}</td><td>{_fmt(row.p99_ms)}</td></tr>"
            for row in status.routes
        )
        or f'<tr><td colspan="{len(shown) + 5}" class="muted">no requests yet</td></tr>'
    )
    age = v["age_seconds"]
    versions_rows = [
        ("DAGs", _fmt(v["dags"])),
        ("Generation", str(v["generation"])),
        ("Age of versions", "no map yet" if age is None else f"{age:.1f} s"),
        ("Leader", v["leader"] or ("this instance" if v["leader_here"] else "another instance / unknown")),
        ("DB polls (errors)", f"{_fmt(v['polls'])} ({_fmt(v['poll_errors'])})"),
        ("Last / average poll", f"{_fmt(v['last_poll_ms'], ' ms')} / {_fmt(v['avg_poll_ms'], ' ms')}"),
        ("Statements per poll", _fmt(v["statements_per_poll"])),
    ]
    redis_rows = [
        ("State", r["state"]),
        ("Circuit breaker", "OPEN (cached views pass through)" if r["breaker_open"] else "closed"),
        ("Errors", _fmt(r["errors"])),
        ("GET p50", _fmt(r["get_p50_ms"], " ms")),
        (
            "L1",
            f"{_bytes(l1['bytes'])} of {_bytes(l1['max_bytes'])}, {_fmt(l1['entries'])} entries, "
            f"{_fmt(l1['evictions'])} evictions",
        ),
    ]
    process_rows = [(str(k), _fmt(x)) for k, x in status.process.items()]

    def kv(rows: list[tuple[str, str]], table_id: str) -> str:
        return (
            f'<table id="{table_id}">'
            + "".join(f"<tr><th>{e(k)}</th><td>{e(x)}</td></tr>" for k, x in rows)
            + "</table>"
        )

    breaker_class = "bad" if r["breaker_open"] else "good"
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">'
        f"<title>{e(title)} status</title><style>{_STYLE}</style></head><body>"
        f'<h1>{e(title)}</h1><p class="muted" id="mode">{e(status.mode)} · refreshes every {refresh} s · '
        f'<span class="{breaker_class}">Redis {e(r["state"])}</span></p>'
        f'<div class="cards">{card_html}</div>'
        f'<h2>Routes</h2><table id="routes"><tr><th>Route</th><th>Requests</th>{head}'
        f"<th>Hit ratio</th><th>p50 ms</th><th>p99 ms</th></tr>{body}</table>"
        f"<h2>Versions</h2>{kv(versions_rows, 'versions')}"
        f"<h2>Redis and L1</h2>{kv(redis_rows, 'redis')}"
        + (f"<h2>Process</h2>{kv(process_rows, 'process')}" if process_rows else "")
        + '<p class="muted">Also: <a href="/metrics">/metrics</a> · <a href="/status.json">/status.json</a> · '
        '<a href="/readyz">/readyz</a> · <a href="/healthz">/healthz</a></p></body></html>\n'
    )

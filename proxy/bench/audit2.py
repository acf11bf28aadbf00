"""Definition flapping accounting for ``--audit`` on Airflow 2 (pure).

Airflow 2's webserver runs several gunicorn workers, each with its own DagBag. A worker re-reads a DAG only
``min_serialized_dag_fetch_interval`` (:data:`FETCH_INTERVAL`, 10 s) after its own last load of it, so a worker
that loaded a DAG shortly before a change keeps serving the old definition for up to 10 s while the others serve
the new one: a client polling a definition view sees it go back and forth (AIRFLOW2-FACTS.md §1).

The audit reproduces that with a DAG of its own, rewritten for every change: change ``n`` defines the task
``bench_change_<n>`` (:func:`audit_dag_source`), so every definition view (``graph_data``, ``grid_data``,
``/api/v1/dags/{id}/tasks``) tells which change it shows (:func:`variant_of`). Changes come in pairs, as in the
facts' reproduction: change A, a couple of requests that make one or two workers load A, change B a second
later. The A of a pair is a *primer* (nobody watches between A and B); staleness is measured for B.

* A **regression** is a response, per client and view, that shows an older change than one the same client had
  already received for that view before it sent the request (:class:`~proxy.bench.audit.MonotoneWatch`;
  overlapping requests are not ordered and never count).
* **Staleness** of a change, per client and view: from the moment its write returned to the first response
  received after that which shows it (or a later one). A (change, client, view) that never showed it before the
  next change is *missed*.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.bench.audit import MonotoneWatch, Staleness

FETCH_INTERVAL = 10.0
"""``[core] min_serialized_dag_fetch_interval``'s default: how long a worker keeps a DAG before re-checking it."""

DEFAULT_DAG = "dagcache_bench_audit"
"""The id of the DAG the audit writes (``--audit-dag`` picks another)."""

DEFAULT_INTERVAL = 20.0
"""How long each change is watched before the next pair (``--audit-interval``'s default on Airflow 2)."""

PAIR_BUDGET = 8.0
"""Seconds a pair usually takes: store A (~1 s), prime (up to a few seconds when the workers loaded the DAG late),
wait a second, store B."""

HEADER = "# Written by dagcache bench --audit (proxy/bench/audit2.py)."

_SOURCE = """\
{header} Change {variant}; the bench deletes this file and the DAG when it ends.
from __future__ import annotations

import datetime

from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG(
    dag_id={dag_id!r},
    description="dagcache bench --audit: its definition changes while the benchmark runs",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["dagcache-bench"],
):
    EmptyOperator(task_id="start") >> EmptyOperator(task_id="bench_change_{variant}")
"""

_MARKER = re.compile(rb"bench_change_(\d+)")
_DAG_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def valid_dag_id(dag_id: str) -> bool:
    """Whether ``dag_id`` is a DAG id Airflow accepts and a safe file name."""
    return bool(_DAG_ID.fullmatch(dag_id)) and not dag_id.startswith(".")


def audit_dag_source(dag_id: str, variant: int) -> str:
    """The audit DAG's file for change ``variant`` (0: the initial definition)."""
    if not valid_dag_id(dag_id):
        raise ValueError(f"not a usable DAG id: {dag_id!r}")
    return _SOURCE.format(header=HEADER, dag_id=dag_id, variant=variant)


def written_by_bench(text: str) -> bool:
    """Whether a file's text is one :func:`audit_dag_source` wrote (the bench never overwrites anything else)."""
    return text.startswith(HEADER)


def variant_of(body: bytes) -> int | None:
    """The change a definition view's body shows: the highest ``bench_change_<n>``, or None (no marker: an error
    page, a login redirect)."""
    found = [int(m) for m in _MARKER.findall(body)]
    return max(found) if found else None


@dataclass(frozen=True, slots=True)
class DefinitionChange:
    """Change ``variant`` of the audit DAG: its write started, and returned at ``done``. A ``primer`` (the A of a
    pair) is not watched and has no staleness."""

    variant: int
    started: float
    done: float
    primer: bool = False


@dataclass(frozen=True, slots=True)
class Seen:
    """One response of a watcher: which change ``view`` showed."""

    client: int
    view: str
    sent: float
    received: float
    variant: int


def regressions(seen: Sequence[Seen]) -> dict[int, int]:
    """Responses that went back to an older change, per client (each view judged on its own)."""
    watches: dict[tuple[int, str], MonotoneWatch] = {}
    for s in sorted(seen, key=lambda s: s.received):
        watches.setdefault((s.client, s.view), MonotoneWatch()).observe(s.sent, s.received, s.variant)
    per_client = {client: 0 for client, _ in watches}
    for (client, _), watch in watches.items():
        per_client[client] += watch.regressions
    return per_client


def staleness(changes: Sequence[DefinitionChange], seen: Sequence[Seen]) -> Staleness:
    """Staleness per (watched change, client, view); regressions are counted by :func:`regressions`."""
    ordered = sorted(changes, key=lambda c: c.started)
    pairs = sorted({(s.client, s.view) for s in seen})
    seconds: list[float] = []
    missed = 0
    for index, change in enumerate(ordered):
        if change.primer:
            continue
        window_end = ordered[index + 1].started if index + 1 < len(ordered) else float("inf")
        for client, view in pairs:
            fresh = min(
                (
                    s.received
                    for s in seen
                    if s.client == client
                    and s.view == view
                    and s.received >= change.done
                    and s.sent < window_end
                    and s.variant >= change.variant
                ),
                default=None,
            )
            if fresh is None:
                missed += 1
            else:
                seconds.append(fresh - change.done)
    return Staleness(seconds, missed, 0)


def next_pair(
    now: float, quiet_until: float, deadline: float, watch: float, budget: float = PAIR_BUDGET
) -> float | None:
    """When the next pair may start: not before ``quiet_until`` (see :func:`quiet_after`), and only if the pair and
    ``watch`` seconds of watching its B still fit before ``deadline``; None when they do not."""
    start = max(now, quiet_until)
    return start if start + budget + watch <= deadline else None


def quiet_after(done: float, watch: float) -> float:
    """The earliest start of the pair after one whose B returned at ``done``: B is watched for ``watch`` seconds, and
    every worker must be able to reload the DAG on its next request, or A would be stale everywhere and nothing
    would flap. A primed worker reloads B at most :data:`FETCH_INTERVAL` after B, and holds it for as long again."""
    return done + max(watch, 2 * FETCH_INTERVAL + 1.0)

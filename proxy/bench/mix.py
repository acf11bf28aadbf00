"""What a browser on the Airflow 3 UI requests, and when (pure).

Derived from the Airflow UI's TypeScript (``airflow-core/src/airflow/ui/src``; bench/README.md lists the files)
and from the requests recorded in headless Chromium against Airflow 3.3.2 (``AIRFLOW3-FACTS.md`` §3):

* opening the app: the five requests every page makes (:data:`SESSION`);
* the DAG list (:func:`dag_list`);
* opening a DAG: its header, grid, graph data and badges (:func:`dag_open`), then the grid's
  ``ti_summaries`` stream for the runs ``grid/runs`` returned (:func:`ti_summaries`);
* while the DAG page stays open, every ``auto_refresh_interval`` (3 s by default, from ``/ui/config``):
  :func:`poll`, whose set depends on whether a run shown in the grid is pending and the DAG is not
  paused, like the UI's ``refetchInterval`` conditions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

DEFAULT_REFRESH = 3.0
"""``[api] auto_refresh_interval``'s default (seconds), served by ``/ui/config``."""

IDLE_BACKOFF = 10
"""``useAutoRefresh`` re-checks for pending runs 10x less often when there are none."""

BROWSER_CONNECTIONS = 6
"""Concurrent HTTP/1.1 connections a browser opens per origin: each simulated user's limit."""

GRID_RUNS = 10
"""Runs shown in the grid (``limit=10`` in the recorded requests)."""

HEAVY_DAGS = ("big_dag",)
"""DAG ids every other user opens when present (the 1,000-task DAG of the test setup)."""

SESSION: tuple[str, ...] = (
    "/api/v2/version",
    "/ui/config",
    "/ui/auth/menus",
    "/ui/auth/me",
    "/api/v2/plugins",
)

_PENDING = frozenset({"deferred", "scheduled", "running", "up_for_reschedule", "up_for_retry", "queued", "restarting"})


def is_pending(state: object) -> bool:
    """``isStatePending`` of ``src/utils/query.ts``: these states, or no state at all."""
    return not state or state in _PENDING


def _q(dag_id: str) -> str:
    return quote(dag_id, safe="")


def dag_list() -> tuple[str, ...]:
    """The DAG list page (``pages/DagsList``)."""
    return (
        "/ui/dags?dag_runs_limit=14&limit=50&offset=0&tags_match_mode=any&exclude_stale=true&order_by=dag_display_name",
        "/api/v2/dagTags?limit=10&offset=0&order_by=name&tag_name_prefix_pattern=",
        "/api/v2/importErrors?limit=1",
        "/api/v2/dags/~/dagRuns?limit=1&state=running&state=queued",
    )


def _dag_ui(dag_id: str) -> str:
    return f"/ui/dags?dag_ids={_q(dag_id)}&dag_runs_limit=1"  # pages/Dag/Dag.tsx useDagServiceGetDagsUi


def _grid_runs(dag_id: str) -> str:
    return f"/ui/grid/runs/{_q(dag_id)}?limit={GRID_RUNS}&order_by=-run_after"


def _grid_structure(dag_id: str) -> str:
    return (
        f"/ui/grid/structure/{_q(dag_id)}?include_upstream=false&include_downstream=false"
        f"&limit={GRID_RUNS}&order_by=-run_after"
    )


def _pending_runs(dag_id: str) -> str:
    return f"/api/v2/dags/{_q(dag_id)}/dagRuns?limit=1&state=running&state=queued"  # useAutoRefresh


def _latest_run(dag_id: str) -> str:
    return f"/ui/dags/{_q(dag_id)}/latest_run"  # useRefreshOnNewDagRuns


def is_grid_runs(path: str) -> bool:
    return path.startswith("/ui/grid/runs/")


def is_details(path: str) -> bool:
    return bool(re.fullmatch(r"/api/v2/dags/[^/?]+/details", path))


def is_latest_run(path: str) -> bool:
    return bool(re.fullmatch(r"/ui/dags/[^/?]+/latest_run", path))


def dag_open(dag_id: str) -> tuple[str, ...]:
    """Opening a DAG (the grid tab): what loads before ``grid/runs`` has answered."""
    q = _q(dag_id)
    return (
        f"/api/v2/dags/{q}/details",
        f"/api/v2/dags/{q}",
        _dag_ui(dag_id),
        _grid_structure(dag_id),
        _grid_runs(dag_id),
        f"/ui/structure/structure_data?dag_id={q}&external_dependencies=false",
        _latest_run(dag_id),
        f"/ui/backfills?dag_id={q}&active=true",
        f"/api/v2/dagWarnings?dag_id={q}",
        _pending_runs(dag_id),
    )


def ti_summaries(dag_id: str, run_ids: Sequence[str]) -> str | None:
    """``useGridTiSummariesStream``: one NDJSON request for all runs shown in the grid (none without runs)."""
    if not run_ids:
        return None
    return f"/ui/grid/ti_summaries/{_q(dag_id)}?{urlencode([('run_ids', r) for r in run_ids])}"


def poll(dag_id: str, run_ids: Sequence[str], *, pending: bool, tick: int) -> tuple[str, ...]:
    """The requests an open DAG page repeats at ``tick`` (1, 2, ... intervals after opening).

    With a pending run in the grid: the page's ``/ui/dags`` row (``Dag.tsx``), ``grid/runs``
    (``useGridRuns``), ``grid/structure`` (``useGridStructure``), the ``ti_summaries`` stream
    (``useGridTiSummariesStream``) and the pending-runs check (``useAutoRefresh``) every interval.
    Without: ``latest_run`` every interval (``useRefreshOnNewDagRuns``) and the pending-runs check every
    :data:`IDLE_BACKOFF` intervals."""
    if pending:
        paths = [_dag_ui(dag_id), _grid_runs(dag_id), _grid_structure(dag_id), _pending_runs(dag_id)]
        summaries = ti_summaries(dag_id, run_ids)
        if summaries is not None:
            paths.append(summaries)
        return tuple(paths)
    paths = [_latest_run(dag_id)]
    if tick % IDLE_BACKOFF == 0:
        paths.append(_pending_runs(dag_id))
    return tuple(paths)


def on_new_run(dag_id: str) -> tuple[str, ...]:
    """``useRefreshOnNewDagRuns`` saw another latest run: it invalidates the DAG's ``/ui/dags`` row, its
    details and the grid queries, which refetch at once (``ti_summaries`` follows ``grid/runs``)."""
    return (_dag_ui(dag_id), f"/api/v2/dags/{_q(dag_id)}/details", _grid_structure(dag_id), _grid_runs(dag_id))


def grid_state(payload: object) -> tuple[list[str], bool]:
    """Run ids (grid order) and "any pending" from a ``grid/runs`` answer (a JSON list of runs)."""
    if not isinstance(payload, list):
        return [], False
    runs = [r for r in payload if isinstance(r, Mapping) and isinstance(r.get("run_id"), str)]
    return [str(r["run_id"]) for r in runs], any(is_pending(r.get("state")) for r in runs)


def latest_run_id(payload: object) -> str:
    """The run id ``latest_run`` names ("" when the DAG has no run: ``null``)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("run_id"), str):
        return str(payload["run_id"])
    return ""


def dag_ids_of(payload: object) -> list[str]:
    """DAG ids from a ``/ui/dags`` answer (``{"dags": [{"dag_id": ...}, ...]}``)."""
    dags = payload.get("dags") if isinstance(payload, Mapping) else None
    if not isinstance(dags, list):
        return []
    return [str(d["dag_id"]) for d in dags if isinstance(d, Mapping) and isinstance(d.get("dag_id"), str)]


def choose_dag(dag_ids: Sequence[str], user: int, visit: int, heavy: Sequence[str] = HEAVY_DAGS) -> str | None:
    """The DAG user ``user`` opens on its ``visit``-th visit: every other pick a heavy DAG when the
    list has one, else the small DAGs in turn, so users spread over the list."""
    if not dag_ids:
        return None
    heavies = [d for d in dag_ids if d in heavy]
    others = [d for d in dag_ids if d not in heavy] or heavies
    slot = user + visit
    if heavies and slot % 2 == 0:
        return heavies[(slot // 2) % len(heavies)]
    return others[(slot // 2) % len(others)]


def parse_users(text: str) -> list[int]:
    """``"10,50,200"`` -> ``[10, 50, 200]``; raises ``ValueError`` with the reason."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--users wants comma-separated positive integers, got {text!r}") from None
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"--users wants comma-separated positive integers, got {text!r}")
    return counts


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"500ms"`` or plain seconds -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"a duration looks like 30s, 2m, 500ms or 10 (seconds), got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]

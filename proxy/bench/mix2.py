"""What a browser on the Airflow 2.11 UI requests, and when (pure).

Read from the UI source that the apache-airflow 2.11.2 wheel ships (``airflow/www/static/js`` and
``airflow/www/templates``; bench/README.md, *Airflow 2*, lists the files and what each rule comes from):

* the DAG page ``/dags/{dag_id}/grid`` (HTML, passes through dagcache) sets ``autoRefreshInterval`` and
  ``defaultDagRunDisplayNumber`` (``templates/airflow/grid.html``): :func:`page_settings` reads both;
* the grid's JSON, ``/object/grid_data`` (``api/useGridData.ts``): with no filter chosen axios drops the undefined
  ``root``, ``filter_upstream``, ``filter_downstream`` and ``base_date`` (``dag/useFilters.tsx``: the base date
  is "now") and the empty ``run_type``/``run_state`` arrays, leaving ``dag_id`` and ``num_runs``;
* the graph's JSON, ``/object/graph_data`` (``api/useGraphData.ts``): ``dag_id`` only;
* the DAG list of the Cluster Activity page (``api/useDags.tsx`` from ``cluster-activity/live-metrics/Dags.tsx``):
  ``/api/v1/dags?paused=false`` and ``/api/v1/dags``, refetched every ``autoRefreshInterval``.

Every user requests the three views every interval (:func:`poll`): the set the benchmark compares. The UI itself
refetches ``grid_data`` on that timer only while a shown run is queued or running and the DAG is not paused,
``graph_data`` only when the Graph tab mounts (``staleTime`` 5 min, no ``refetchInterval``: ``App.tsx``), and the
DAG list only on the Cluster Activity page, so this is the load of users who keep both pages open and reopen the
graph, not of one idle tab.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

DEFAULT_REFRESH = 3.0
"""``[webserver] auto_refresh_interval``'s default (seconds)."""

DEFAULT_NUM_RUNS = 25
"""``[webserver] default_dag_run_display_number``'s default: the ``num_runs`` of the grid."""

DEFAULT_DAG = "big_dag"
"""The DAG every user keeps open (the 1,000-task DAG of the test setup); ``--dag`` picks another."""

DAG_LIST: tuple[str, ...] = ("/api/v1/dags?paused=false", "/api/v1/dags")
"""``useDags({paused: false})`` and ``useDags({})`` of the Cluster Activity page."""


def _q(dag_id: str) -> str:
    return quote(dag_id, safe="")


def page(dag_id: str) -> str:
    """The DAG page with its Graph tab (HTML; dagcache passes HTML pages through)."""
    return f"/dags/{_q(dag_id)}/grid?tab=graph"


def grid_data(dag_id: str, num_runs: int = DEFAULT_NUM_RUNS) -> str:
    return f"/object/grid_data?dag_id={_q(dag_id)}&num_runs={num_runs}"


def graph_data(dag_id: str) -> str:
    return f"/object/graph_data?dag_id={_q(dag_id)}"


def tasks(dag_id: str) -> str:
    """``/api/v1/dags/{id}/tasks``: the definition as the REST API shows it (read by the audit, not by users)."""
    return f"/api/v1/dags/{_q(dag_id)}/tasks"


def poll(dag_id: str, num_runs: int = DEFAULT_NUM_RUNS) -> tuple[str, ...]:
    """The requests a user repeats every interval: the grid, the graph and the two DAG lists."""
    return (grid_data(dag_id, num_runs), graph_data(dag_id), *DAG_LIST)


def open_page(dag_id: str, num_runs: int = DEFAULT_NUM_RUNS) -> tuple[str, ...]:
    """What loads once the page's HTML is there (its JavaScript fetches the grid and the graph)."""
    return (grid_data(dag_id, num_runs), graph_data(dag_id))


@dataclass(frozen=True, slots=True)
class PageSettings:
    refresh: float | None  # autoRefreshInterval, seconds
    num_runs: int | None  # defaultDagRunDisplayNumber


_REFRESH = re.compile(r"const\s+autoRefreshInterval\s*=\s*(\d+(?:\.\d+)?)\s*;")
_NUM_RUNS = re.compile(r"const\s+defaultDagRunDisplayNumber\s*=\s*(\d+)\s*;")
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def page_settings(html: str) -> PageSettings:
    """``autoRefreshInterval`` and ``defaultDagRunDisplayNumber`` from the DAG page's inline script (None when
    absent or not positive)."""
    refresh = _REFRESH.search(html)
    num_runs = _NUM_RUNS.search(html)
    seconds = float(refresh.group(1)) if refresh else None
    count = int(num_runs.group(1)) if num_runs else None
    return PageSettings(seconds if seconds else None, count if count else None)


def csrf_token(html: str) -> str | None:
    """The ``csrf_token`` of the ``/login/`` form, or None."""
    found = _CSRF.search(html)
    return found.group(1) if found else None


def major_of(version: object) -> int | None:
    """The major version from a ``/api/v1/version`` or ``/api/v2/version`` answer (``{"version": "2.11.2"}``)."""
    text = version.get("version") if isinstance(version, Mapping) else None
    if not isinstance(text, str):
        return None
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def version_of(payload: object) -> str | None:
    """The ``version`` string of a ``/api/v1/version`` answer."""
    text = payload.get("version") if isinstance(payload, Mapping) else None
    return text if isinstance(text, str) else None


def json_of(body: bytes) -> object:
    """A JSON body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None

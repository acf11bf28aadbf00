"""Route table of the ``airflow2`` profile: the Airflow 2.11 webserver's JSON views that the UI and REST clients read.

Read from apache-airflow 2.11.2: the Flask views of ``airflow/www/views.py`` (``/object/*``, which read their
arguments with ``request.args``) and the Connexion API ``airflow/api_connexion/openapi/v1.yaml`` with its
handlers in ``airflow/api_connexion/endpoints/*.py``. ``params`` is exactly the set of query parameter names a
view reads (``tests/unit/test_routes2.py`` checks the ``/api/v1`` ones against the installed ``v1.yaml``).

What differs from Airflow 3 (AIRFLOW2-FACTS.md):

* **Definition views read the worker's DagBag** (``get_airflow_app().dag_bag.get_dag``): each gunicorn worker
  re-checks ``serialized_dag.dag_hash`` only ``min_serialized_dag_fetch_interval`` (10 s) after its own last
  load, so for up to that long after a change a miss may be filled from a stale worker. The version model holds
  a changed DAG's versions for that window (``[versions] upstream_convergence``), so such fills land under the
  old key and the view moves once, to the new definition.
* **Every route here is ``session_bound``**: Airflow answers ``Cache-Control: no-store`` on every view and the UI
  views re-set the ``session`` cookie (expiry refresh) with ``Vary: Cookie``. The cache overrides both for these
  routes only: the stored entry never holds a ``Set-Cookie``, the client whose request went upstream still gets
  its refreshed cookie, and the key's scope is derived from that same cookie or Basic credential
  (:mod:`proxy.airflow.auth2`), so a body is only ever served to the credential it was rendered for.
* **HTML pages always pass through**: they embed a CSRF token with a 1-second timestamp and per-session filters.
* Authorization is FAB's: ``@auth.has_access_dag`` / ``@security.requires_access_dag`` per role and per-DAG
  permission; lists are filtered by ``get_permitted_dag_ids(user)``. The scope is always the credential.

``/api/v1/dagSources/{file_token}`` names a *file* (the token is the signed ``fileloc``), not a DAG, and the body is
``dag_code`` of that file: it is keyed by the map's ``generation`` (``all_dag_states``), which moves with any
definition change, and by ``Accept`` (json / text/plain; none -> 406, not stored).
"""

from __future__ import annotations

from typing import Final

from proxy.routes import Kind, Route, RouteTable

__all__ = ["PROFILE", "ROUTES", "TABLE"]

PROFILE: Final = "airflow2"

D, S, G, P = Kind.DEFINITION, Kind.STATE, Kind.GLOBAL, Kind.PASS

_EP = "api_connexion/endpoints/"
_V = "www/views.py:Airflow."
_RUN = "/api/v1/dags/{dag_id}/dagRuns/{dag_run_id}"
_TI = _RUN + "/taskInstances"


def _p(names: str, *ranges: str) -> frozenset[str]:
    """Query parameter names: ``names`` split on whitespace, plus ``<r>_gte/_lte`` for each range ``r``."""
    return frozenset(names.split()) | {f"{r}_{op}" for r in ranges for op in ("gte", "lte")}


_TI_FILTERS = _p(
    "limit offset state pool queue executor", "execution_date", "start_date", "end_date", "updated_at", "duration"
)
_DAG_RUNS = _p("limit offset order_by state fields", "execution_date", "start_date", "end_date", "updated_at")


def _r(
    name: str,
    pattern: str,
    kind: Kind,
    params: frozenset[str] = frozenset(),
    *,
    note: str,
    dag_from: str | None = "dag_id",
    vary: tuple[str, ...] = (),
    all_dag_states: bool = False,
) -> Route:
    """A route of this profile: every one is ``session_bound`` (see the module doc)."""
    return Route(
        name,
        pattern,
        kind,
        params,
        dag_from=dag_from,
        vary=vary,
        all_dag_states=all_dag_states,
        session_bound=True,
        note=note,
    )


ROUTES: Final[tuple[Route, ...]] = (
    # ----- "~" (all DAGs) forms: before the {dag_id} routes that would take them ---------------------------
    _r(
        "api.dag_runs.all",
        "/api/v1/dags/~/dagRuns",
        P,
        _DAG_RUNS,
        dag_from=None,
        note=f"{_EP}dag_run_endpoint.py:get_dag_runs with dag_id '~': runs of every DAG. PASS: no key part covers "
        "the runs of all DAGs.",
    ),
    _r(
        "api.task_instances.all",
        "/api/v1/dags/~/dagRuns/{dag_run_id}/taskInstances",
        P,
        _TI_FILTERS,
        dag_from=None,
        note=f"{_EP}task_instance_endpoint.py:get_task_instances with dag_id '~'. PASS: state of all DAGs.",
    ),
    # ----- /object/*: the grid page's JSON (UI session cookie only; Basic auth gets 302 to /login/) -----------
    _r(
        "ui.grid_data",
        "/object/grid_data",
        S,
        _p("dag_id root filter_upstream filter_downstream num_runs base_date run_type run_state"),
        note=f"{_V}grid_data: dag_bag.get_dag (DagBag, per worker) + partial_subset(root) + the num_runs runs up to "
        "base_date (default: the latest execution date) + their task instances and notes (dag_to_grid). 404 for "
        "an unknown DAG. Auth: has_access_dag(GET, TASK_INSTANCE).",
    ),
    _r(
        "ui.graph_data",
        "/object/graph_data",
        D,
        _p("dag_id root filter_upstream filter_downstream"),
        note=f"{_V}graph_data: task groups and edges of the DagBag definition (partial_subset with root). An unknown "
        "or deleted DAG is an HTTP 500 (never stored). Auth: has_access_dag(GET, TASK_INSTANCE).",
    ),
    _r(
        "ui.task_instances",
        "/object/task_instances",
        S,
        _p("dag_id execution_date"),
        note=f"{_V}task_instances: the task instances of the run at execution_date, per task of the DagBag "
        "definition. Auth: has_access_dag(GET, TASK_INSTANCE).",
    ),
    _r(
        "ui.calendar_data",
        "/object/calendar_data",
        S,
        _p("dag_id"),
        note=f"{_V}calendar_data: run counts per day and state + planned runs from the DagBag definition's "
        "timetable after the last automated run. Auth: has_access_dag(GET, RUN).",
    ),
    # ----- DAG list and global views -------------------------------------------------------------------------
    _r(
        "api.dags",
        "/api/v1/dags",
        G,
        _p("limit offset tags dag_id_pattern only_active paused order_by fields"),
        dag_from=None,
        note=f"{_EP}dag_endpoint.py:get_dags: dag rows + tags of the DAGs get_permitted_dag_ids(user) allows; "
        "file_token is a deterministic signature of fileloc. No run state. Auth: requires_access_dag(GET).",
    ),
    _r(
        "api.import_errors",
        "/api/v1/importErrors",
        G,
        _p("limit offset order_by"),
        dag_from=None,
        note=f"{_EP}import_error_endpoint.py:get_import_errors: import_error rows; stack traces of files holding "
        "a DAG the user cannot read are redacted. Auth: requires_access_view(IMPORT_ERRORS).",
    ),
    _r(
        "api.dag_warnings",
        "/api/v1/dagWarnings",
        G,
        _p("dag_id warning_type limit offset order_by"),
        dag_from=None,
        note=f"{_EP}dag_warning_endpoint.py:get_dag_warnings: dag_warning rows (in each DAG's listing fingerprint, "
        "hence in the global version). Auth: requires_access_dag(GET, WARNING).",
    ),
    _r(
        "api.dag_source",
        "/api/v1/dagSources/{file_token}",
        G,
        dag_from=None,
        vary=("accept",),
        all_dag_states=True,
        note=f"{_EP}dag_source_endpoint.py:get_dag_source: DagCode.code(fileloc) of the signed file token; "
        "Accept picks text/plain or JSON (none: 406). Names a file, not a DAG: keyed by the generation, which "
        "moves with any definition. Auth: requires_access_dag(GET, CODE) + batch_is_authorized_dag of every DAG "
        "of the file.",
    ),
    _r(
        "api.dag_stats",
        "/api/v1/dagStats",
        P,
        _p("dag_ids"),
        dag_from=None,
        note=f"{_EP}dag_stats_endpoint.py:get_dag_stats: run counts of several DAGs. PASS.",
    ),
    _r(
        "api.health",
        "/api/v1/health",
        P,
        dag_from=None,
        note=f"{_EP}health_endpoint.py:get_health: live heartbeats. PASS.",
    ),
    _r(
        "api.version",
        "/api/v1/version",
        P,
        dag_from=None,
        note=f"{_EP}version_endpoint.py:get_version: no auth, tiny. PASS.",
    ),
    # ----- one DAG ---------------------------------------------------------------------------------------------
    _r(
        "api.dag",
        "/api/v1/dags/{dag_id}",
        S,
        _p("fields"),
        note=f"{_EP}dag_endpoint.py:get_dag: the dag row + tags (listing fields, which move the DAG's state "
        "version). Auth: requires_access_dag(GET).",
    ),
    _r(
        "api.dag.details",
        "/api/v1/dags/{dag_id}/details",
        S,
        _p("fields"),
        note=f"{_EP}dag_endpoint.py:get_dag_details: the DagBag definition with the dag row's fields set on it; "
        "last_parsed = when the serving worker loaded the DAG (differs per worker: the cached body freezes it). "
        "Auth: requires_access_dag(GET).",
    ),
    _r(
        "api.dag.tasks",
        "/api/v1/dags/{dag_id}/tasks",
        D,
        _p("order_by"),
        note=f"{_EP}task_endpoint.py:get_tasks: tasks of the DagBag definition. Auth: requires_access_dag(GET, TASK).",
    ),
    _r(
        "api.dag.task",
        "/api/v1/dags/{dag_id}/tasks/{task_id}",
        D,
        note=f"{_EP}task_endpoint.py:get_task: one task of the DagBag definition. Auth: requires_access_dag(GET, "
        "TASK).",
    ),
    _r(
        "api.dag_runs",
        "/api/v1/dags/{dag_id}/dagRuns",
        S,
        _DAG_RUNS,
        note=f"{_EP}dag_run_endpoint.py:get_dag_runs: dag_run rows + notes. Auth: requires_access_dag(GET, RUN).",
    ),
    _r(
        "api.dag_run.upstream_dataset_events",
        _RUN + "/upstreamDatasetEvents",
        P,
        note=f"{_EP}dag_run_endpoint.py:get_upstream_dataset_events: other DAGs' dataset events. PASS.",
    ),
    _r(
        "api.dag_run",
        _RUN,
        S,
        _p("fields"),
        note=f"{_EP}dag_run_endpoint.py:get_dag_run: one run + note. Auth: requires_access_dag(GET, RUN).",
    ),
    _r(
        "api.task_instances",
        _TI,
        S,
        _TI_FILTERS,
        note=f"{_EP}task_instance_endpoint.py:get_task_instances: task instances of the run (of every run of the "
        "DAG with dag_run_id '~') + notes, SLA misses, rendered fields. Auth: requires_access_dag(GET, "
        "TASK_INSTANCE).",
    ),
    _r(
        "api.task_instance.list_mapped",
        _TI + "/{task_id}/listMapped",
        S,
        _TI_FILTERS | _p("order_by"),
        note=f"{_EP}task_instance_endpoint.py:get_mapped_task_instances. Auth: requires_access_dag(GET, "
        "TASK_INSTANCE).",
    ),
    _r(
        "api.task_instance",
        _TI + "/{task_id}",
        S,
        note=f"{_EP}task_instance_endpoint.py:get_task_instance. Auth: requires_access_dag(GET, TASK_INSTANCE).",
    ),
    _r(
        "api.task_instance.mapped",
        _TI + "/{task_id}/{map_index:int}",
        S,
        note=f"{_EP}task_instance_endpoint.py:get_mapped_task_instance (map_index typed int). Auth: "
        "requires_access_dag(GET, TASK_INSTANCE).",
    ),
    # ----- HTML pages: named so that tools show why they pass ----------------------------------------------
    _r(
        "ui.home",
        "/home",
        P,
        dag_from=None,
        note="www/views.py:Airflow.index: HTML with a per-second CSRF token and the session's filters. PASS.",
    ),
    _r(
        "ui.dag.grid",
        "/dags/{dag_id}/grid",
        P,
        note="www/views.py:Airflow.grid: HTML with a per-second CSRF token (the JSON it loads is cached). PASS.",
    ),
    _r(
        "ui.dag.graph",
        "/dags/{dag_id}/graph",
        P,
        note="www/views.py:Airflow.graph (redirects to the grid's graph tab). PASS.",
    ),
)

TABLE: Final = RouteTable(PROFILE, ROUTES)

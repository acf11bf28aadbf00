"""Route table of the ``airflow3`` profile: Airflow 3.3's api-server GET routes that the UI and REST clients read.

Read from the FastAPI handlers of apache-airflow 3.3.2 (``airflow/api_fastapi/core_api/routes/{public,ui}/*.py``)
and their parameter classes (``airflow/api_fastapi/common/parameters.py``). Paths are relative to the
api-server root; path parameter names are the ones of the route decorators. ``params`` is exactly the set of
query parameter names (aliases) the handler and its ``Depends()`` accept; ``tests/unit/test_routes3.py``
checks it against the installed Airflow when its venv is present.

Order matters (:func:`proxy.routes.classify` takes the first match, and ``{x}`` matches any one segment):
the ``~`` wildcard forms (all DAGs) come before the ``{dag_id}`` routes they would otherwise match. Path
parameters the handler types ``int`` (``map_index``, ``version_number``, ``try_number``, ``task_try_number``)
are ``{name:int}``, so ``.../{task_id}/{map_index:int}`` never takes a literal sibling such as
``.../{task_id}/xcomEntries`` (those still come first, as in Airflow's own registration order).

Authorization, in every ``note``: ``requires_access_dag(GET, <entity>)`` is the 403 gate of single-DAG
routes; ``Readable*FilterDep`` (``permitted_dag_filter_factory``) filters list bodies to the DAGs the auth
manager lets the user read. Both are decided by (role, teams) under SimpleAuthManager
(``SimpleAuthManager._is_authorized``), so they may share a role scope; ``per_user`` marks the bodies that
depend on the user's *identity* (``GetUserDep`` -> ``user.get_id()``: favorites), which no scope but the
credential may share.

Beyond the kind: ``pass_unless`` (the kind holds only for some values of a parameter), ``all_dag_states``
(a global view that also depends on every DAG's runs) and ``uses_clock`` (computed from now). Query order is
kept per name by :mod:`proxy.requests` (``order_by`` is a multi-key sort; ``run_ids`` orders the NDJSON lines).
"""

from __future__ import annotations

from typing import Final

from proxy.routes import Kind, Route, RouteTable

__all__ = ["FALSE_VALUES", "PROFILE", "ROUTES", "TABLE"]

PROFILE: Final = "airflow3"

D, S, G, P = Kind.DEFINITION, Kind.STATE, Kind.GLOBAL, Kind.PASS

_PUB = "routes/public/"
_UI = "routes/ui/"
_RUN = "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}"
_TI = _RUN + "/taskInstances/{task_id}"


def _p(names: str, *ranges: str) -> frozenset[str]:
    """Query parameter names: ``names`` split on whitespace, plus ``<r>_gt/_gte/_lt/_lte`` for each range ``r``."""
    return frozenset(names.split()) | {f"{r}_{op}" for r in ranges for op in ("gt", "gte", "lt", "lte")}


#: pydantic's spellings of ``False`` for a ``bool`` query parameter (compared lower-cased).
FALSE_VALUES: Final = frozenset({"0", "off", "f", "false", "n", "no"})

# ---------------------------------------------------------------------------------------------------------
# Parameter sets (from each handler's signature and its Depends()/Query* classes).

_DAGS_COMMON = _p(
    "limit offset order_by tags tags_match_mode owners dag_id_pattern dag_id_prefix_pattern"
    " dag_display_name_pattern dag_display_name_prefix_pattern exclude_stale paused has_import_errors"
    " last_dag_run_state dag_run_state bundle_name bundle_version is_favorite has_asset_schedule asset_dependency"
)
# Timestamp/duration range filters (``<name>_gte`` ...) shared by the run and task-instance list handlers.
_RUN_RANGES = ("run_after", "logical_date", "start_date", "end_date", "updated_at", "duration")
_GRID_RUN_FILTERS = _p("limit offset order_by run_type state triggering_user triggering_user_prefix", "run_after")
_TI_FILTERS = _p(
    "limit offset order_by state pool pool_name_pattern pool_name_prefix_pattern queue queue_name_pattern"
    " queue_name_prefix_pattern executor version_number try_number operator operator_name_pattern"
    " operator_name_prefix_pattern map_index rendered_map_index_pattern rendered_map_index_prefix_pattern",
    *_RUN_RANGES,
)

# Query parameters of routes/public/dag_run.py:get_dag_runs (served for one DAG and for "~").
_DAG_RUNS_PARAMS = _p(
    "limit offset cursor order_by state run_type dag_version bundle_version conf_contains"
    " run_id_pattern run_id_prefix_pattern triggering_user_name_pattern triggering_user_name_prefix_pattern"
    " dag_id_pattern dag_id_prefix_pattern partition_key_pattern partition_key_prefix_pattern"
    " consuming_asset_pattern partition_date_gte partition_date_lte",
    *_RUN_RANGES,
)

ROUTES: Final[tuple[Route, ...]] = (
    # ----- the "~" (all DAGs) wildcard forms: before the {dag_id} routes that would match them -------------
    Route(
        "api.dag_runs.all",
        "/api/v2/dags/~/dagRuns",
        P,
        _DAG_RUNS_PARAMS,
        dag_from=None,
        note=f"{_PUB}dag_run.py:get_dag_runs with dag_id '~' = runs of every DAG (the DAG list polls "
        "?limit=1&state=running&state=queued every 3 s). PASS: it depends on the run state of all DAGs, which "
        "no key part covers (the global version ignores runs), and it is cheap upstream (partial index on "
        "queued/running). Could be GLOBAL with all_dag_states (keyed by the generation). Auth: "
        "requires_access_dag(GET, RUN) with dag_id None + ReadableDagRunsFilterDep.",
    ),
    Route(
        "api.dag_versions.all",
        "/api/v2/dags/~/dagVersions",
        P,
        _p("limit offset order_by version_number bundle_name bundle_version"),
        dag_from=None,
        note=f"{_PUB}dag_versions.py:get_dag_versions with dag_id '~' = versions of every DAG. PASS: would need "
        "every DAG's definition version. Auth: requires_access_dag(GET, VERSION) + ReadableDagVersionsFilterDep.",
    ),
    Route(
        "api.task_instances.all",
        "/api/v2/dags/~/dagRuns/{dag_run_id}/taskInstances",
        P,
        _p(
            "cursor task_id task_display_name_pattern task_display_name_prefix_pattern task_group_id dag_id_pattern"
            " dag_id_prefix_pattern run_id_pattern run_id_prefix_pattern"
        )
        | _TI_FILTERS,
        dag_from=None,
        note=f"{_PUB}task_instances.py:get_task_instances with dag_id '~' (and dag_run_id '~'; a real run id "
        "with '~' is a 400) = task instances of every DAG. PASS: state of all DAGs. Auth: requires_access_dag("
        "GET, TASK_INSTANCE) + ReadableTIFilterDep.",
    ),
    # ----- DAG list and global views -------------------------------------------------------------------------
    Route(
        "ui.dags",
        "/ui/dags",
        G,
        _DAGS_COMMON | _p("dag_ids dag_runs_limit has_pending_actions"),
        dag_from=None,
        per_user=True,
        pass_unless={"has_pending_actions": FALSE_VALUES},
        all_dag_states=True,
        note=f"{_UI}dags.py:get_dags. Body: dag rows + tags, the dag_runs_limit newest runs of each DAG shown, "
        "is_favorite of each DAG for the user (DagFavorite.user_id == user.get_id()), pending HITL actions "
        "(only with has_pending_actions=true). Filters last_dag_run_state / dag_run_state (any run) and "
        "order_by=last_run_* read runs. Auth: requires_access_dag(GET) + (GET, RUN) + (GET, HITL_DETAIL) + "
        "(GET, TASK_INSTANCE), ReadableDagsFilterDep, GetUserDep (favorites) -> per_user. The dag_favorite "
        "table is in no version: (un)favorite writes must bump the global version.",
    ),
    Route(
        "api.dags",
        "/api/v2/dags",
        G,
        _DAGS_COMMON | _p("timetable_type", "dag_run_start_date", "dag_run_end_date"),
        dag_from=None,
        per_user=True,
        all_dag_states=True,
        note=f"{_PUB}dags.py:get_dags. Body: dag rows + tags only (DAGResponse, file_token is a deterministic "
        "signature). Runs matter only through the filters last_dag_run_state, dag_run_state, dag_run_*_date_* "
        "and order_by=last_run_state|last_run_start_date (common/db/dags.py:generate_dag_with_latest_run_query). "
        "Auth: requires_access_dag(GET) + ReadableDagsFilterDep; is_favorite filter = _FavoriteFilter(GetUserDep) "
        "-> per_user (only that parameter makes it so).",
    ),
    Route(
        "api.dag_tags",
        "/api/v2/dagTags",
        G,
        _p("limit offset order_by tag_name_pattern tag_name_prefix_pattern"),
        dag_from=None,
        note=f"{_PUB}dag_tags.py:get_dag_tags: distinct tag names of non-stale DAGs. Auth: "
        "requires_access_dag(GET) + ReadableTagsFilterDep.",
    ),
    Route(
        "api.import_errors",
        "/api/v2/importErrors",
        G,
        _p("limit offset order_by filename filename_pattern filename_prefix_pattern bundle_name"),
        dag_from=None,
        note=f"{_PUB}import_error.py:get_import_errors: import_error rows joined with dag rows by file; "
        "stacktraces of files holding a DAG the user cannot read are redacted. Auth: requires_access_view("
        "IMPORT_ERRORS) + GetUserDep used only for auth_manager.get_authorized_dag_ids (role-decided).",
    ),
    Route(
        "api.dag_warnings",
        "/api/v2/dagWarnings",
        G,
        _p("dag_id warning_type limit offset order_by"),
        dag_from=None,
        note=f"{_PUB}dag_warning.py:list_dag_warnings (the DAG page sends ?dag_id=): dag_warning rows, which "
        "are in each DAG's listing fingerprint, hence in the global version; dag_id is an optional filter, "
        "not a key part. Auth: requires_access_dag(GET, WARNING) + ReadableDagWarningsFilterDep.",
    ),
    Route(
        "api.dag_stats",
        "/api/v2/dagStats",
        P,
        _p("dag_ids"),
        dag_from=None,
        note=f"{_PUB}dag_stats.py:get_dag_stats: run counts per state of the DAGs in the list param dag_ids (all "
        "DAGs without it). PASS: state of several DAGs, no single key part. Auth: requires_access_dag(GET, RUN) "
        "+ ReadableDagRunsFilterDep.",
    ),
    Route(
        "ui.dashboard.dag_stats",
        "/ui/dashboard/dag_stats",
        G,
        dag_from=None,
        all_dag_states=True,
        note=f"{_UI}dashboard.py:dag_stats: counts of active (unpaused), failed (latest run failed), running and "
        "queued DAGs: dag rows + runs of every DAG. Auth: requires_access_dag(GET) + ReadableDagsFilterDep.",
    ),
    Route(
        "ui.dashboard.historical_metrics",
        "/ui/dashboard/historical_metrics_data",
        P,
        _p("start_date end_date"),
        dag_from=None,
        note=f"{_UI}dashboard.py:historical_metrics: run and task-instance counts per state of every DAG between "
        "start_date and end_date (default now). PASS: the UI computes start_date from the clock on every "
        "request (a new key each time), the window ends at now, and it reads all task instances.",
    ),
    # ----- one DAG: definition views -------------------------------------------------------------------------
    Route(
        "api.dag",
        "/api/v2/dags/{dag_id}",
        S,
        note=f"{_PUB}dags.py:get_dag: the dag row (is_paused, next_dagrun_*, has_import_errors, last_parsed_time, "
        "...) + tags + the latest definition (get_latest_version_of_dag). STATE, not DEFINITION: a pause or tag "
        "change moves only the listing fingerprint, which today advances only the global version; STATE is "
        "at least bumped by writes through the proxy and bounded by state_max_age. Auth: "
        "requires_access_dag(GET).",
    ),
    Route(
        "api.dag.details",
        "/api/v2/dags/{dag_id}/details",
        S,
        per_user=True,
        note=f"{_PUB}dags.py:get_dag_details: like api.dag plus is_favorite (DagFavorite of user.get_id()), "
        "active_runs_count (count of running runs) and last_parsed (= DBDagBag load time of the worker, a new "
        "value per request: the cached body freezes it). Auth: requires_access_dag(GET) + GetUserDep -> per_user.",
    ),
    Route(
        "api.dag.tasks",
        "/api/v2/dags/{dag_id}/tasks",
        D,
        _p("order_by"),
        note=f"{_PUB}tasks.py:get_tasks: tasks of the latest definition; order_by is a single str (one key, "
        "'-' for descending), not a list. downstream_task_ids order differs per upstream worker. Auth: "
        "requires_access_dag(GET, TASK).",
    ),
    Route(
        "api.dag.task",
        "/api/v2/dags/{dag_id}/tasks/{task_id}",
        D,
        note=f"{_PUB}tasks.py:get_task: one task of the latest definition. Auth: requires_access_dag(GET, TASK).",
    ),
    Route(
        "api.dag.source",
        "/api/v2/dagSources/{dag_id}",
        D,
        _p("version_number"),
        vary=("accept",),
        note=f"{_PUB}dag_sources.py:get_dag_source: dag_code of version_number (latest without it; an old version "
        "is immutable once it has task instances, the latest is covered by the definition fingerprint, which "
        "includes source_code_hash). Accept: application/json -> JSON, text/plain -> the raw source. Redacted "
        "when the file holds a DAG the user cannot read: requires_access_dag(GET, CODE) + GetUserDep used for "
        "get_authorized_dag_ids (role-decided).",
    ),
    Route(
        "api.dag.versions",
        "/api/v2/dags/{dag_id}/dagVersions",
        D,
        _p("limit offset order_by version_number bundle_name bundle_version"),
        note=f"{_PUB}dag_versions.py:get_dag_versions: dag_version rows of the DAG (a new one is a new latest "
        "version -> definition change). Auth: requires_access_dag(GET, VERSION) + ReadableDagVersionsFilterDep.",
    ),
    Route(
        "api.dag.version",
        "/api/v2/dags/{dag_id}/dagVersions/{version_number:int}",
        D,
        note=f"{_PUB}dag_versions.py:get_dag_version: one dag_version row (+ dag_display_name, bundle_url). "
        "Auth: requires_access_dag(GET, VERSION).",
    ),
    Route(
        "ui.structure",
        "/ui/structure/structure_data",
        D,
        _p("dag_id include_upstream include_downstream depth root external_dependencies version_number"),
        pass_unless={"external_dependencies": FALSE_VALUES},
        note=f"{_UI}structure.py:structure_data: graph of version_number (latest without it) + the DAG's outlet "
        "asset references. DEFINITION only while external_dependencies is false (pass_unless): with true it adds "
        "every DAG's dependencies (SerializedDagModel.get_dag_dependencies), filtered by ReadableDagsFilterDep, "
        "and alias-resolved asset events (services/ui/structure.py:bind_output_assets_to_tasks), i.e. all DAGs' "
        "definitions + runs. Auth: requires_access_dag(GET) + (GET, DEPENDENCIES) + (GET, TASK_INSTANCE), with "
        "the dag_id query param.",
    ),
    Route(
        "ui.dag.deadline_alerts",
        "/ui/dags/{dag_id}/deadlineAlerts",
        D,
        _p("limit offset order_by version_number"),
        note=f"{_UI}deadlines.py:get_dag_deadline_alerts: deadline_alert rows of the serialized DAG of "
        "version_number (latest without it), written at serialization. Auth: requires_access_dag(GET).",
    ),
    # ----- one DAG: state views ------------------------------------------------------------------------------
    Route(
        "ui.grid.structure",
        "/ui/grid/structure/{dag_id}",
        S,
        _GRID_RUN_FILTERS | _p("include_upstream include_downstream depth root"),
        note=f"{_UI}grid.py:get_dag_structure: latest definition merged with every serialized version used by the "
        "task instances of the selected runs (and the default order is the timetable's run_ordering): depends "
        "on runs. Auth: requires_access_dag(GET, TASK_INSTANCE) + (GET, RUN).",
    ),
    Route(
        "ui.grid.runs",
        "/ui/grid/runs/{dag_id}",
        S,
        _GRID_RUN_FILTERS,
        uses_clock=True,
        note=f"{_UI}grid.py:get_grid_runs: runs + their dag versions + has_note (dag_run_note) + "
        "has_missed_deadline (deadline.missed, in no fingerprint: bounded by state_max_age). duration of a "
        "started, unfinished run = now - start_date (datamodels/ui/common.py:GridRunsResponse.duration). "
        "Auth: requires_access_dag(GET, TASK_INSTANCE) + (GET, RUN).",
    ),
    Route(
        "ui.grid.ti_summaries",
        "/ui/grid/ti_summaries/{dag_id}",
        S,
        _p("run_ids"),
        note=f"{_UI}grid.py:get_grid_ti_summaries_stream: NDJSON stream, one line per run_ids value in that "
        "order: task-instance states/dates/notes aggregated over the definition of each run's version (versions "
        "with task instances are immutable). Store only a complete stream. Auth: requires_access_dag(GET, "
        "TASK_INSTANCE) + (GET, RUN).",
    ),
    Route(
        "ui.gantt",
        "/ui/gantt/{dag_id}/{run_id}",
        S,
        note=f"{_UI}gantt.py:get_gantt_data: tries of the run's unmapped task instances (task_instance + "
        "task_instance_history). Auth: requires_access_dag(GET, TASK_INSTANCE) + (GET, RUN).",
    ),
    Route(
        "ui.calendar",
        "/ui/calendar/{dag_id}",
        S,
        _p("granularity", "logical_date", "partition_date"),
        uses_clock=True,
        note=f"{_UI}calendar.py:get_calendar: run counts per day/hour + planned runs from the latest definition's "
        "timetable after the last run (services/ui/calendar.py); for non-cron timetables with catchup=False "
        "the planning starts at now (timetables/interval.py). Auth: requires_access_dag(GET, TASK_INSTANCE) + "
        "(GET, RUN).",
    ),
    Route(
        "ui.dag.latest_run",
        "/ui/dags/{dag_id}/latest_run",
        S,
        note=f"{_UI}dags.py:get_latest_run_info: the newest run by run_after ('~' -> 400). Auth: "
        "requires_access_dag(GET, RUN).",
    ),
    Route(
        "ui.dag_run.stats",
        "/ui/dags/{dag_id}/dagRuns/{dag_run_id}/stats",
        S,
        note=f"{_UI}dag_runs.py:get_dag_run_stats: duration statistics of the DAG's last 100 finished runs. "
        "Auth: requires_access_dag(GET, RUN).",
    ),
    Route(
        "ui.dag_run.deadlines",
        "/ui/dags/{dag_id}/dagRuns/{dag_run_id}/deadlines",
        P,
        _p("limit offset order_by missed", "deadline_time", "last_updated_at"),
        note=f"{_UI}deadlines.py:get_deadlines: deadline rows, whose missed flag the scheduler sets without "
        "touching runs or task instances. PASS: in no fingerprint.",
    ),
    Route(
        "ui.backfills",
        "/ui/backfills",
        P,
        _p("dag_id active limit offset order_by"),
        dag_from=None,
        note=f"{_UI}backfills.py:list_backfills_ui (every DAG tab: ?dag_id=&active=true): backfill rows "
        "(completed_at, is_paused). PASS: the backfill table is in no fingerprint. Auth: "
        "requires_access_backfill(GET) + ReadableBackfillsFilterDep.",
    ),
    Route(
        "ui.next_run_assets",
        "/ui/next_run_assets/{dag_id}",
        P,
        note=f"{_UI}assets.py:next_run_assets: asset events emitted by *other* DAGs and the asset_dag_run_queue. "
        "PASS: depends on other DAGs' activity.",
    ),
    Route(
        "api.dag_runs",
        "/api/v2/dags/{dag_id}/dagRuns",
        S,
        _DAG_RUNS_PARAMS,
        note=f"{_PUB}dag_run.py:get_dag_runs: runs + dag versions + notes + dag_display_name; the latest "
        "definition is read for existence/timetable. duration is end - start (None while running). cursor= "
        "(empty) selects keyset pagination. Auth: requires_access_dag(GET, RUN) + ReadableDagRunsFilterDep.",
    ),
    Route(
        "api.dag_run.wait",
        _RUN + "/wait",
        P,
        _p("interval result"),
        note=f"{_PUB}dag_run.py:wait_dag_run_until_finished: long-poll NDJSON stream until the run finishes. PASS.",
    ),
    Route(
        "api.dag_run.upstream_asset_events",
        _RUN + "/upstreamAssetEvents",
        P,
        note=f"{_PUB}dag_run.py:get_upstream_asset_events: asset events (other DAGs' data). PASS.",
    ),
    Route(
        "api.dag_run",
        _RUN,
        S,
        note=f"{_PUB}dag_run.py:get_dag_run: one run + note + dag versions. Auth: requires_access_dag(GET, RUN).",
    ),
    Route(
        "api.task_instances",
        _RUN + "/taskInstances",
        S,
        _p(
            "cursor task_id task_display_name_pattern task_display_name_prefix_pattern task_group_id dag_id_pattern"
            " dag_id_prefix_pattern run_id_pattern run_id_prefix_pattern"
        )
        | _TI_FILTERS,
        note=f"{_PUB}task_instances.py:get_task_instances: task instances of the run (all runs of the DAG with "
        "dag_run_id '~') + rendered fields, notes, versions; the run's definition resolves task_group_id. "
        "Auth: requires_access_dag(GET, TASK_INSTANCE) + ReadableTIFilterDep.",
    ),
    # ----- .../taskInstances/{task_id}/<literal>: before .../{task_id}/{map_index:int}, as Airflow registers them
    Route(
        "api.task_instance.logs",
        _TI + "/logs/{try_number:int}",
        P,
        _p("full_content map_index token"),
        note=f"{_PUB}log.py:get_log: log files or remote logs, not the DB; NDJSON stream. PASS.",
    ),
    Route(
        "api.task_instance.external_log_url",
        _TI + "/externalLogUrl/{try_number:int}",
        P,
        _p("map_index"),
        note=f"{_PUB}log.py:get_external_log_url: built by the log handler. PASS.",
    ),
    Route(
        "api.task_instance.xcom_entries",
        _TI + "/xcomEntries",
        P,
        _p(
            "limit offset order_by xcom_key xcom_key_pattern xcom_key_prefix_pattern dag_display_name_pattern"
            " dag_display_name_prefix_pattern run_id_pattern run_id_prefix_pattern task_id_pattern"
            " task_id_prefix_pattern map_index map_index_filter",
            "logical_date",
            "run_after",
        ),
        note=f"{_PUB}xcom.py:get_xcom_entries: XCom rows, in no fingerprint. PASS.",
    ),
    Route(
        "api.task_instance.xcom_entry",
        _TI + "/xcomEntries/{xcom_key}",
        P,
        _p("map_index deserialize stringify"),
        note=f"{_PUB}xcom.py:get_xcom_entry (Airflow's {{xcom_key:path}}; only one-segment keys match here). PASS.",
    ),
    Route(
        "api.task_instance.links",
        _TI + "/links",
        P,
        _p("map_index try_number"),
        note=f"{_PUB}extra_links.py:get_extra_links: operator extra links, computed by plugin/operator code from "
        "XComs. PASS.",
    ),
    Route(
        "api.task_instance.dependencies",
        _TI + "/dependencies",
        P,
        _p("map_index"),
        note=f"{_PUB}task_instances.py:get_task_instance_dependencies: scheduler dep checks (pools, concurrency "
        "of other DAGs, retry delay vs now). PASS.",
    ),
    Route(
        "api.task_instance.mapped.dependencies",
        _TI + "/{map_index:int}/dependencies",
        P,
        note=f"{_PUB}task_instances.py:get_task_instance_dependencies (by map_index). PASS, as above.",
    ),
    Route(
        "api.task_instance.state_store",
        _TI + "/state-store",
        P,
        _p("limit offset map_index"),
        note=f"{_PUB}task_state_store.py:list_task_state_store: task state store, in no fingerprint. PASS.",
    ),
    Route(
        "api.task_instance.state_store_entry",
        _TI + "/state-store/{key}",
        P,
        _p("map_index"),
        note=f"{_PUB}task_state_store.py:get_task_state_store ({{key:path}}; one segment here). PASS.",
    ),
    Route(
        "api.task_instance.list_mapped",
        _TI + "/listMapped",
        S,
        _TI_FILTERS,
        note=f"{_PUB}task_instances.py:get_mapped_task_instances: the mapped instances of one task. Auth: "
        "requires_access_dag(GET, TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance.tries",
        _TI + "/tries",
        S,
        _p("map_index"),
        note=f"{_PUB}task_instances.py:get_task_instance_tries: task_instance_history + current try (+ "
        "hitl_detail, not in the state fingerprint). Auth: requires_access_dag(GET, TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance.try",
        _TI + "/tries/{task_try_number:int}",
        S,
        _p("map_index"),
        note=f"{_PUB}task_instances.py:get_task_instance_try_details. Auth: requires_access_dag(GET, TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance",
        _TI,
        S,
        note=f"{_PUB}task_instances.py:get_task_instance: the unmapped task instance + rendered fields, note, "
        "dag version, dag_display_name. Auth: requires_access_dag(GET, TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance.mapped.tries",
        _TI + "/{map_index:int}/tries",
        S,
        note=f"{_PUB}task_instances.py:get_mapped_task_instance_tries. Auth: requires_access_dag(GET, TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance.mapped.try",
        _TI + "/{map_index:int}/tries/{task_try_number:int}",
        S,
        note=f"{_PUB}task_instances.py:get_mapped_task_instance_try_details. Auth: requires_access_dag(GET, "
        "TASK_INSTANCE).",
    ),
    Route(
        "api.task_instance.mapped",
        _TI + "/{map_index:int}",
        S,
        note=f"{_PUB}task_instances.py:get_mapped_task_instance (the UI's task instance page asks for map_index "
        "-1). map_index is typed int in the handler, hence {{map_index:int}}. Auth: requires_access_dag(GET, "
        "TASK_INSTANCE).",
    ),
    # ----- requested on every page, look cacheable, are not DAG data -------------------------------------
    Route(
        "ui.config",
        "/ui/config",
        P,
        dag_from=None,
        note=f"{_UI}config.py:get_configs: [api] config + log handler; no DB version covers it. PASS.",
    ),
    Route(
        "ui.auth.me",
        "/ui/auth/me",
        P,
        dag_from=None,
        note=f"{_UI}auth.py:get_current_user_info: the user itself (GetUserDep). PASS.",
    ),
    Route(
        "ui.auth.menus",
        "/ui/auth/menus",
        P,
        dag_from=None,
        note=f"{_UI}auth.py:get_auth_menus: menu items the user may see (GetUserDep). PASS.",
    ),
    Route(
        "api.version",
        "/api/v2/version",
        P,
        dag_from=None,
        note=f"{_PUB}version.py:get_version: no auth; tiny. PASS.",
    ),
    Route(
        "api.plugins",
        "/api/v2/plugins",
        P,
        _p("limit offset"),
        dag_from=None,
        note=f"{_PUB}plugins.py:get_plugins: loaded plugins (process state, not DB). PASS.",
    ),
    Route(
        "api.pools",
        "/api/v2/pools",
        P,
        _p("limit offset order_by pool_name_pattern pool_name_prefix_pattern"),
        dag_from=None,
        note=f"{_PUB}pools.py:get_pools: pool slots, changing with every running task of any DAG. PASS.",
    ),
    Route(
        "api.monitor.health",
        "/api/v2/monitor/health",
        P,
        dag_from=None,
        note=f"{_PUB}monitor.py:get_health: live scheduler/triggerer heartbeats; probes must reach Airflow. PASS.",
    ),
)

TABLE: Final = RouteTable(PROFILE, ROUTES)

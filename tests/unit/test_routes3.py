"""The airflow3 route table: the UI's real requests classify right, nothing else is cached by accident."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from proxy.airflow.routes3 import FALSE_VALUES, PROFILE, ROUTES, TABLE
from proxy.routes import Kind, Route, RouteMatch, RouteTable, classify
from tests.airflow.harness import ensure_airflow_venv

D, S, G, P = Kind.DEFINITION, Kind.STATE, Kind.GLOBAL, Kind.PASS
DAG = "big_dag"
RUN = "manual__2026-11-20T10:00:00+00:00"
RUN2 = "scheduled__2026-11-19T00:00:00+00:00"
TASK = "group_3.table_07.extract"
TI = f"/api/v2/dags/{DAG}/dagRuns/{RUN}/taskInstances"

# AIRFLOW3-FACTS.md section 3: every request the UI made (recorded in Chromium), with its query string.
MEASURED: list[tuple[str, str, Kind]] = [
    # every page
    ("/api/v2/version", "api.version", P),
    ("/ui/config", "ui.config", P),
    ("/ui/auth/menus", "ui.auth.menus", P),
    ("/ui/auth/me", "ui.auth.me", P),
    ("/api/v2/plugins", "api.plugins", P),
    # DAG list
    (
        "/ui/dags?dag_runs_limit=14&limit=50&offset=0&tags_match_mode=any&exclude_stale=true&order_by=dag_display_name",
        "ui.dags",
        G,
    ),
    ("/api/v2/dagTags?limit=10&offset=0&order_by=name&tag_name_prefix_pattern=", "api.dag_tags", G),
    ("/api/v2/importErrors?limit=1", "api.import_errors", G),
    ("/api/v2/dags/~/dagRuns?limit=1&state=running&state=queued", "api.dag_runs.all", P),
    # any DAG tab
    (f"/api/v2/dags/{DAG}/details", "api.dag.details", S),
    (f"/api/v2/dags/{DAG}", "api.dag", S),
    (
        f"/ui/grid/structure/{DAG}?include_upstream=false&include_downstream=false&limit=10&order_by=-run_after",
        "ui.grid.structure",
        S,
    ),
    (f"/ui/grid/runs/{DAG}?limit=10&order_by=-run_after", "ui.grid.runs", S),
    (f"/ui/grid/ti_summaries/{DAG}?run_ids={RUN}&run_ids={RUN2}", "ui.grid.ti_summaries", S),
    (f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies=false&version_number=3", "ui.structure", D),
    (f"/ui/dags/{DAG}/latest_run", "ui.dag.latest_run", S),
    (f"/ui/backfills?dag_id={DAG}&active=true", "ui.backfills", P),
    (f"/api/v2/dagWarnings?dag_id={DAG}", "api.dag_warnings", G),
    (f"/api/v2/dags/{DAG}/dagRuns?limit=1&state=running&state=queued", "api.dag_runs", S),
    # Runs, Tasks, Code tabs
    (f"/api/v2/dags/{DAG}/dagRuns?cursor=&limit=50&order_by=-run_after", "api.dag_runs", S),
    (f"/api/v2/dags/{DAG}/tasks", "api.dag.tasks", D),
    (f"/api/v2/dagSources/{DAG}", "api.dag.source", D),
    (f"/api/v2/dagSources/{DAG}?version_number=2", "api.dag.source", D),
    (f"/api/v2/dags/{DAG}/dagVersions", "api.dag.versions", D),
    (f"/api/v2/dags/{DAG}/dagVersions?order_by=-version_number", "api.dag.versions", D),
    # run page
    (f"/api/v2/dags/{DAG}/dagRuns/{RUN}", "api.dag_run", S),
    (f"{TI}?cursor=&limit=50&order_by=-id", "api.task_instances", S),
    (f"/ui/structure/structure_data?dag_id={DAG}", "ui.structure", D),
    (f"/ui/grid/ti_summaries/{DAG}?run_ids={RUN}", "ui.grid.ti_summaries", S),
    # task instance page
    (f"{TI}/{TASK}/-1", "api.task_instance.mapped", S),
    (f"/api/v2/dags/{DAG}/tasks/{TASK}", "api.dag.task", D),
    (f"{TI}/{TASK}/logs/1?map_index=-1", "api.task_instance.logs", P),
    # Home
    ("/ui/dashboard/dag_stats", "ui.dashboard.dag_stats", G),
    ("/ui/dashboard/historical_metrics_data?start_date=2026-11-19T10:00:00.000Z", "ui.dashboard.historical_metrics", P),
    ("/ui/dags?limit=10&is_favorite=true", "ui.dags", G),
    ("/api/v2/pools", "api.pools", P),
    ("/api/v2/monitor/health", "api.monitor.health", P),
]

# Further reads named in the facts' section 3/4 and the brief.
OTHERS: list[tuple[str, str, Kind]] = [
    ("/api/v2/dags?limit=50", "api.dags", G),
    (f"/api/v2/dags/{DAG}/dagVersions/4", "api.dag.version", D),
    (f"{TI}/{TASK}", "api.task_instance", S),
    (f"{TI}/{TASK}/7", "api.task_instance.mapped", S),
    (f"{TI}/{TASK}/listMapped?limit=50&order_by=map_index", "api.task_instance.list_mapped", S),
    (f"{TI}/{TASK}/tries?map_index=-1", "api.task_instance.tries", S),
    (f"{TI}/{TASK}/tries/2", "api.task_instance.try", S),
    (f"{TI}/{TASK}/3/tries", "api.task_instance.mapped.tries", S),
    (f"{TI}/{TASK}/3/tries/2", "api.task_instance.mapped.try", S),
    (f"/ui/gantt/{DAG}/{RUN}", "ui.gantt", S),
    (f"/ui/calendar/{DAG}?granularity=daily&logical_date_gte=2026-01-01T00:00:00Z", "ui.calendar", S),
    (f"/ui/dags/{DAG}/dagRuns/{RUN}/stats", "ui.dag_run.stats", S),
    (f"/ui/dags/{DAG}/deadlineAlerts?version_number=3", "ui.dag.deadline_alerts", D),
    (f"/api/v2/dags/{DAG}/dagRuns/~/taskInstances?state=failed", "api.task_instances", S),
]


def _classify(path: str) -> RouteMatch | None:
    """The indexed matcher, checked against the linear specification on every use."""
    found = TABLE.classify(path)
    reference = classify(ROUTES, path)
    assert _same(found, reference), path
    return found


def _same(a: RouteMatch | None, b: RouteMatch | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.route is b.route and dict(a.path_params) == dict(b.path_params)


def _split(url: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


@pytest.mark.parametrize(("url", "name", "kind"), MEASURED + OTHERS, ids=[u for u, _, _ in MEASURED + OTHERS])
def test_request_classifies_with_known_params(url: str, name: str, kind: Kind):
    path, query = _split(url)
    found = _classify(path)
    assert found is not None, f"{path} matches no route"
    assert (found.route.name, found.route.kind) == (name, kind)
    assert {key for key, _ in query} <= found.route.params, "a parameter the UI sends is unknown to the route"
    route = found.route
    if route.kind is not P and route.dag_from is not None:
        dag = found.path_params.get(route.dag_from) or dict(query).get(route.dag_from)
        assert dag == DAG


@pytest.mark.parametrize(
    "path",
    [
        "/execution/task-instances/0199aaaa-0000-7000-8000-000000000000/run",
        "/execution/task-instances/0199aaaa-0000-7000-8000-000000000000/heartbeat",
        "/auth/token",
        "/auth/login",
        "/api/v2/auth/logout",
        f"{TI}/{TASK}/logs/1",
        f"{TI}/{TASK}/externalLogUrl/1",
        f"{TI}/{TASK}/xcomEntries",
        f"{TI}/{TASK}/xcomEntries/return_value",
        f"{TI}/{TASK}/xcomEntries/tries",
        f"{TI}/{TASK}/links",
        f"{TI}/{TASK}/dependencies",
        f"{TI}/{TASK}/-1/dependencies",
        f"{TI}/{TASK}/state-store",
        f"/api/v2/dags/{DAG}/dagRuns/{RUN}/wait",
        f"/api/v2/dags/{DAG}/dagRuns/{RUN}/upstreamAssetEvents",
        f"/api/v2/dags/{DAG}/dagRuns/{RUN}/hitlDetails",
        "/api/v2/config",
        "/api/v2/config/section/core/option/dags_folder",
        "/api/v2/connections",
        "/api/v2/connections/my_conn",
        "/api/v2/variables",
        "/api/v2/variables/my_var",
        "/api/v2/dagStats",
        "/api/v2/eventLogs",
        "/api/v2/assets",
        "/api/v2/jobs",
        "/ui/config",
        "/ui/dependencies",
        "/ui/teams",
        f"/ui/next_run_assets/{DAG}",
        f"/ui/dags/{DAG}/dagRuns/{RUN}/deadlines",
        "/",
        "/static/assets/index-abc123.js",
        "/static/favicon.ico",
        "/docs",
        "/openapi.json",
        "/api/v2/dags/~/dagRuns",
        "/api/v2/dags/~/dagVersions",
        "/api/v2/dags/~/dagRuns/~/taskInstances",
    ],
)
def test_not_cached(path: str):
    found = _classify(path)
    assert found is None or found.route.kind is P, f"{path} -> {found.route.name}"


def test_route_names_are_unique_and_the_table_is_airflow3():
    names = [route.name for route in ROUTES]
    assert len(names) == len(set(names))
    assert PROFILE == "airflow3"
    assert all(route.pattern.startswith(("/api/v2/", "/ui/")) for route in ROUTES)


SAMPLES = {"dag_id": "some_dag", "map_index": "3", "version_number": "2", "try_number": "1", "task_try_number": "1"}


def _sample(pattern: str) -> str:
    return re.sub(r"\{([a-z_]+)(?::int)?\}", lambda m: SAMPLES.get(m[1], f"x_{m[1]}"), pattern)


@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_no_route_is_shadowed_by_an_earlier_one(route: Route):
    found = _classify(_sample(route.pattern))
    assert found is not None and found.route is route


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (f"/api/v2/dags/{DAG}/details", "api.dag.details"),
        (f"/api/v2/dags/{DAG}/tasks", "api.dag.tasks"),
        (f"/api/v2/dags/{DAG}", "api.dag"),
        (f"{TI}/{TASK}/xcomEntries", "api.task_instance.xcom_entries"),
        (f"{TI}/{TASK}/listMapped", "api.task_instance.list_mapped"),
        (f"{TI}/{TASK}/tries", "api.task_instance.tries"),
        (f"{TI}/{TASK}/-1", "api.task_instance.mapped"),
        ("/api/v2/dags/~/dagRuns", "api.dag_runs.all"),
        (f"/api/v2/dags/~/dagRuns/{RUN}/taskInstances", "api.task_instances.all"),
    ],
)
def test_ordering_of_overlapping_patterns(path: str, name: str):
    found = _classify(path)
    assert found is not None and found.route.name == name


@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_route_fields_are_consistent(route: Route):
    path_params = set(re.findall(r"\{([a-z_]+)(?::int)?\}", route.pattern))
    assert path_params == route.path_params
    assert not path_params & route.params, "a name is both a path and a query parameter"
    assert route.note, "every route says why"
    assert re.search(r"routes/(public|ui)/\w+\.py:\w+", route.note), "the note cites file:function"
    if route.kind is G:
        assert route.dag_from is None
    if route.kind in (D, S):
        assert route.dag_from in path_params | route.params, "a DAG view must name its DAG"
    if "~" in route.pattern:
        assert route.kind is P and route.dag_from is None
    assert all(h == h.lower() for h in route.vary)


def test_per_user_views_are_the_identity_dependent_ones():
    assert {route.name for route in ROUTES if route.per_user} == {"ui.dags", "api.dags", "api.dag.details"}


def test_value_conditions_and_all_dag_states():
    for route in ROUTES:
        assert set(route.pass_unless) <= route.params
        assert all(value == value.lower() for values in route.pass_unless.values() for value in values)
        if route.all_dag_states:
            assert route.kind is G
        if route.pass_unless or route.all_dag_states or route.uses_clock:
            assert route.kind is not P
    assert "false" in FALSE_VALUES and "true" not in FALSE_VALUES
    by_name = TABLE.by_name
    assert by_name["ui.structure"].pass_unless == {"external_dependencies": FALSE_VALUES}
    assert by_name["ui.dags"].pass_unless == {"has_pending_actions": FALSE_VALUES}
    assert {r.name for r in ROUTES if r.all_dag_states} == {"ui.dags", "api.dags", "ui.dashboard.dag_stats"}
    assert {r.name for r in ROUTES if r.uses_clock} == {"ui.grid.runs", "ui.calendar"}


def test_typed_path_params_keep_literal_siblings_apart():
    def name(path: str) -> str | None:
        found = _classify(path)
        return None if found is None else found.route.name

    assert name(f"{TI}/{TASK}/xcomEntries") == "api.task_instance.xcom_entries"
    assert name(f"{TI}/{TASK}/notanint") is None
    assert name(f"{TI}/{TASK}/1.5") is None
    assert name(f"/api/v2/dags/{DAG}/dagVersions/latest") is None
    assert name(f"{TI}/{TASK}/-1/tries") == "api.task_instance.mapped.tries"
    assert name(f"{TI}/{TASK}/\uff11") is None, "only ASCII digits are an int"
    assert name(f"{TI}/{TASK}/7\n") is None, "no trailing newline slips through a regex $"


def test_dag_sources_vary_on_accept():
    by_name = {route.name: route for route in ROUTES}
    assert by_name["api.dag.source"].vary == ("accept",)


# ----- against the installed Airflow 3: patterns, exact parameter sets, handler cited in the note ------------

_INTROSPECT = textwrap.dedent(
    """
    import inspect, json
    from fastapi.dependencies.utils import get_flat_dependant
    from fastapi.routing import APIRoute
    from airflow.api_fastapi.core_api.routes.public import public_router
    from airflow.api_fastapi.core_api.routes.ui import ui_router
    out = {}
    for r in [*public_router.routes, *ui_router.routes]:
        if isinstance(r, APIRoute) and "GET" in r.methods:
            flat = get_flat_dependant(r.dependant, skip_repeats=True)
            src = inspect.getsourcefile(r.endpoint).split("api_fastapi/core_api/")[-1]
            out[r.path] = {"query": sorted({p.alias for p in flat.query_params}),
                           "handler": f"{src}:{r.endpoint.__name__}"}
    print("@@" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def airflow_get_routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    venv = ensure_airflow_venv(3)
    home: Path = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _INTROSPECT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    routes: dict[str, dict[str, object]] = json.loads(line[2:])
    return routes


def _airflow_path(pattern: str) -> str:
    """Our pattern as Airflow's route path: '~' is a value of {dag_id}/{dag_run_id}; some params are ':path'."""
    path = pattern.replace(":int}", "}")
    path = path.replace("/dags/~/", "/dags/{dag_id}/").replace("/dagRuns/~/", "/dagRuns/{dag_run_id}/")
    return path.replace("{xcom_key}", "{xcom_key:path}").replace("{key}", "{key:path}")


@pytest.mark.airflow
@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_route_matches_the_airflow_handler(route: Route, airflow_get_routes: dict[str, dict[str, object]]):
    upstream = airflow_get_routes.get(_airflow_path(route.pattern))
    assert upstream is not None, f"Airflow has no GET {route.pattern}"
    assert sorted(route.params) == upstream["query"]
    assert str(upstream["handler"]) in route.note


@pytest.mark.airflow
def test_no_airflow_get_route_lands_on_a_foreign_cached_route(airflow_get_routes: dict[str, dict[str, object]]):
    ours = {_airflow_path(route.pattern): route for route in ROUTES}
    for path in airflow_get_routes:
        found = _classify(_sample(path.replace(":path", "")))
        if found is None or found.route.kind is P:
            continue
        assert ours.get(path) is found.route, f"Airflow's GET {path} would be cached as {found.route.name}"


# ----- the indexed classify returns exactly what the linear scan returns ---------------------------------------


def _vocabulary() -> list[str]:
    words = {seg for route in ROUTES for seg in route.pattern.split("/") if seg and "{" not in seg}
    return sorted(words) + ["-1", "0", "42", "-", "--1", "1a", "~", DAG, RUN, TASK, "x y", "", "%2F", "\n", "７"]


def test_indexed_classify_equals_linear_scan_on_many_paths():
    rng = random.Random(20261125)
    words = _vocabulary()
    paths: list[str] = ["", "/", "//", "api/v2/dags", "/api/v2/dags/", "/api/v2/dags//tasks"]
    for route in ROUTES:
        base = _sample(route.pattern).split("/")
        paths.append("/".join(base))
        for _ in range(40):
            parts = list(base)
            op = rng.randrange(4)
            index = rng.randrange(1, len(parts))
            if op == 0:
                parts[index] = rng.choice(words)
            elif op == 1:
                parts.insert(index, rng.choice(words))
            elif op == 2 and len(parts) > 2:
                del parts[index]
            else:
                parts.append(rng.choice(words))
            paths.append("/".join(parts))
    for _ in range(3000):
        paths.append("/" + "/".join(rng.choice(words) for _ in range(rng.randrange(1, 9))))
    matched = 0
    for path in paths:
        found = _classify(path)
        matched += found is not None
    assert matched > len(ROUTES) * 4, "the sample exercises matches, not only misses"


def test_first_route_of_a_shape_wins_in_the_index_too():
    first = Route("first", "/a/{x}", Kind.STATE, dag_from="x", note="-")
    second = Route("second", "/a/{y}", Kind.STATE, dag_from="y", note="-")
    literal = Route("literal", "/a/b", Kind.PASS, dag_from=None, note="-")
    table = RouteTable("test", (first, literal, second))
    for path in ("/a/b", "/a/c", "/a/1"):
        assert _same(table.classify(path), classify(table.routes, path))
    assert table.classify("/a/b").route is first  # type: ignore[union-attr]


def test_route_rejects_patterns_the_trie_cannot_express():
    for pattern in ("/a/{x}.json", "/a//b", "a/b", "/a/{x}/{x}", "/a/{x:float}"):
        with pytest.raises(ValueError):
            Route("bad", pattern, Kind.PASS, dag_from=None)

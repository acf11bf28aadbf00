"""The airflow2 route table: the Airflow 2.11 UI's JSON requests classify right, HTML pages pass, and the
/api/v1 query parameters are exactly those of Airflow's OpenAPI spec."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from proxy.airflow.routes2 import PROFILE, ROUTES, TABLE
from proxy.policy import WRITES2, NotStorable, is_storable, write_effects
from proxy.requests import Reject, normalize_target
from proxy.routes import Kind, Route
from tests.airflow.harness import ensure_airflow_venv

D, S, G, P = Kind.DEFINITION, Kind.STATE, Kind.GLOBAL, Kind.PASS
DAG = "big_dag"
RUN = "manual__2026-11-20T10:00:00+00:00"
TOKEN = "Ii90bXAvYWYyeC9ob21lL2RhZ3Mvc21hbGxfMDAwLnB5Ig.esOW3xwMob3RBjj1_6lerk43e_s"
TI = f"/api/v1/dags/{DAG}/dagRuns/{RUN}/taskInstances"

# The grid page's <meta> URLs (AIRFLOW2-FACTS.md section 4) and the REST reads of the issue.
CASES: list[tuple[str, str, Kind]] = [
    (f"/object/grid_data?dag_id={DAG}&num_runs=25", "ui.grid_data", S),
    (f"/object/grid_data?dag_id={DAG}&root=a&filter_upstream=true&filter_downstream=false", "ui.grid_data", S),
    (f"/object/graph_data?dag_id={DAG}", "ui.graph_data", D),
    (f"/object/task_instances?dag_id={DAG}&execution_date=2026-11-20T10:00:00+00:00", "ui.task_instances", S),
    (f"/object/calendar_data?dag_id={DAG}", "ui.calendar_data", S),
    ("/api/v1/dags?limit=100&only_active=true&order_by=dag_id", "api.dags", G),
    (f"/api/v1/dags/{DAG}", "api.dag", S),
    (f"/api/v1/dags/{DAG}/details", "api.dag.details", S),
    (f"/api/v1/dags/{DAG}/tasks", "api.dag.tasks", D),
    (f"/api/v1/dags/{DAG}/tasks/extract", "api.dag.task", D),
    (f"/api/v1/dagSources/{TOKEN}", "api.dag_source", G),
    (f"/api/v1/dags/{DAG}/dagRuns?limit=25&order_by=-execution_date", "api.dag_runs", S),
    (f"/api/v1/dags/{DAG}/dagRuns/{RUN}", "api.dag_run", S),
    (f"{TI}?limit=100", "api.task_instances", S),
    (f"{TI}/extract", "api.task_instance", S),
    (f"{TI}/extract/-1", "api.task_instance.mapped", S),
    (f"{TI}/extract/listMapped", "api.task_instance.list_mapped", S),
    ("/api/v1/importErrors?limit=1", "api.import_errors", G),
    ("/api/v1/dags/~/dagRuns?limit=1", "api.dag_runs.all", P),
    ("/home", "ui.home", P),
    (f"/dags/{DAG}/grid", "ui.dag.grid", P),
]


@pytest.mark.parametrize(("url", "name", "kind"), CASES)
def test_requests_classify(url: str, name: str, kind: Kind):
    target = normalize_target(url, "", TABLE)
    assert not isinstance(target, Reject), target
    assert (target.route.name, target.route.kind) == (name, kind)


@pytest.mark.parametrize(
    "url",
    [
        f"/object/grid_data?dag_id={DAG}&unknown=1",  # unknown parameter
        "/login/",
        "/logout/",
        f"/dags/{DAG}/code",
        f"{TI}/extract/logs/1",
        "/api/v2/dags",  # the airflow3 table's routes are not this profile's
    ],
)
def test_not_cached(url: str):
    target = normalize_target(url, "", TABLE)
    assert isinstance(target, Reject) or target.route.kind is P


def test_every_route_is_session_bound_and_named_once():
    assert TABLE.profile == PROFILE == "airflow2"
    assert all(route.session_bound for route in ROUTES)
    assert len({route.name for route in ROUTES}) == len(ROUTES)


def test_dag_sources_vary_on_accept_and_follow_every_definition():
    route = TABLE.by_name["api.dag_source"]
    assert route.vary == ("accept",) and route.all_dag_states and route.dag_from is None


AIRFLOW2_UI = [
    ("Content-Type", "application/json; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Vary", "Cookie"),
    ("Set-Cookie", "session=abc.def; Expires=Fri, 25 Dec 2026 10:28:24 GMT; HttpOnly; Path=/; SameSite=Lax"),
]


def test_the_session_refresh_is_overridden_only_for_session_bound_routes():
    assert is_storable(200, AIRFLOW2_UI, 10, 100, session_bound=True) is True
    assert not is_storable(200, AIRFLOW2_UI, 10, 100)
    assert is_storable(302, AIRFLOW2_UI, 10, 100, session_bound=True) is NotStorable.STATUS  # to /login/
    problem = [("Content-Type", "application/problem+json"), ("Cache-Control", "no-store")]
    assert is_storable(403, problem, 10, 100, session_bound=True) is NotStorable.STATUS


def test_a_plain_text_dag_source_is_stored_only_keyed_by_accept():
    text = [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
    assert is_storable(200, text, 10, 100, keyed_headers=("accept",), session_bound=True) is True
    assert is_storable(200, text, 10, 100, session_bound=True) is NotStorable.CONTENT_TYPE


_SPEC = textwrap.dedent(
    """
    import json, os, yaml, airflow.api_connexion as api
    spec = yaml.safe_load(open(os.path.join(os.path.dirname(api.__file__), "openapi", "v1.yaml")))
    params = spec["components"]["parameters"]
    def resolve(p):
        return params[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
    out = {}
    for path, item in spec["paths"].items():
        if "get" in item:
            found = [resolve(p) for p in item.get("parameters", []) + item["get"].get("parameters", [])]
            out["/api/v1" + path] = {"query": sorted(p["name"] for p in found if p["in"] == "query"),
                                     "operation": item["get"]["operationId"]}
        for method in ("post", "patch", "put", "delete"):
            if method in item:
                out[method.upper() + " /api/v1" + path] = {"operation": item[method]["operationId"]}
    print("@@" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def airflow2_spec() -> dict[str, dict[str, object]]:
    venv = ensure_airflow_venv(2)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", _SPEC], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    spec: dict[str, dict[str, object]] = json.loads(line[2:])
    return spec


API_ROUTES = [route for route in ROUTES if route.pattern.startswith("/api/v1/")]


@pytest.mark.airflow
@pytest.mark.parametrize("route", API_ROUTES, ids=[route.name for route in API_ROUTES])
def test_api_route_params_are_airflows(route: Route, airflow2_spec: dict[str, dict[str, object]]):
    path = route.pattern.replace(":int}", "}").replace("/dags/~/", "/dags/{dag_id}/")
    upstream = airflow2_spec.get(path)
    assert upstream is not None, f"Airflow 2.11 has no GET {route.pattern}"
    assert sorted(route.params) == upstream["query"]
    assert f":{upstream['operation']}" in route.note


@pytest.mark.airflow
@pytest.mark.parametrize(
    ("method", "route"), [(m, r) for m, r, _, _ in WRITES2], ids=[r.name for _, r, _, _ in WRITES2]
)
def test_write_routes_are_airflows(method: str, route: Route, airflow2_spec: dict[str, dict[str, object]]):
    upstream = airflow2_spec.get(f"{method} " + route.pattern.replace(":int}", "}"))
    assert upstream is not None, f"Airflow 2.11 has no {method} {route.pattern}"
    assert route.name.endswith(f":{upstream['operation']}")


@pytest.mark.parametrize(
    ("method", "path", "dag", "listing"),
    [
        ("PATCH", "/api/v1/dags/small_001", "small_001", True),  # pause
        ("POST", "/api/v1/dags/small_001/dagRuns", "small_001", False),  # trigger
        ("POST", f"/api/v1/dags/{DAG}/dagRuns/{RUN}/clear", DAG, False),
        ("PATCH", f"{TI}/extract/3", DAG, False),
        ("PATCH", "/api/v1/dags", None, True),
    ],
)
def test_airflow2_writes_bump_what_they_change(method: str, path: str, dag: str | None, listing: bool):
    effect = write_effects(method, path, 200)
    assert effect is not None and (effect.dag_id, effect.state, effect.listing) == (dag, True, listing)
    assert write_effects(method, path, 403) is None
    assert write_effects("POST", "/api/v1/dags/~/dagRuns/list", 200) is None  # a read sent as POST

"""The decision layer: which requests are cacheable under which key, which responses are stored, which writes bump."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from typing import Any

import pytest

from proxy.airflow.routes3 import TABLE
from proxy.policy import (
    WRITES,
    Cacheable,
    KeyParts,
    NotStorable,
    PassThrough,
    Reason,
    WriteEffect,
    decide,
    is_storable,
    write_effects,
)
from proxy.requests import RejectReason, normalize_target
from proxy.scope import PassReason, Scope
from proxy.versions.model import DagVersion, VersionMap
from tests.airflow.harness import ensure_airflow_venv

NOW = 1_800_000_000.0
DAG = "big_dag"
VERSIONS = VersionMap(
    generation=500,
    schema="3:29ce7909c52b",
    global_version=400,
    dags={DAG: DagVersion(definition=100, state=300, changed_at=NOW - 5), "small": DagVersion(7, 8, NOW - 50)},
    polled_at=NOW - 1,
)
USER = Scope(credential="c:user", role=None, exp=NOW + 3600, jti="j", sub="viewer1", source="bearer")
ROLE_USER = Scope(credential="c:user", role="r:viewer", exp=NOW + 3600, jti="j", sub="viewer1", source="cookie")


def _decide(raw: str, method: str = "GET", scope: Scope | PassReason = USER, **kwargs: Any) -> PassThrough | Cacheable:
    options: dict[str, Any] = {"versions": VERSIONS, "now": NOW, "max_version_age": 10.0}
    options.update(kwargs)
    versions = options.pop("versions")
    now = options.pop("now")
    return decide(method, normalize_target(raw, "", TABLE), scope, versions, now, **options)


def _key(raw: str, **kwargs: Any) -> KeyParts:
    found = _decide(raw, **kwargs)
    assert isinstance(found, Cacheable), found
    return found.key_parts


@pytest.mark.parametrize(
    ("raw", "versions", "dag"),
    [
        (f"/api/v2/dags/{DAG}/tasks", (("definition", 100),), DAG),
        (f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies=false", (("definition", 100),), DAG),
        (f"/ui/grid/runs/{DAG}?limit=10", (("definition", 100), ("state", 300)), DAG),
        ("/api/v2/dagTags?limit=10", (("global", 400),), ""),
        ("/ui/dags?limit=50", (("global", 400), ("generation", 500)), ""),
        ("/ui/dashboard/dag_stats", (("global", 400), ("generation", 500)), ""),
        ("/api/v2/dags?limit=50", (("global", 400), ("generation", 500)), ""),
    ],
)
def test_key_holds_the_versions_the_kind_depends_on(raw: str, versions: tuple[tuple[str, int], ...], dag: str):
    found = _decide(raw)
    assert isinstance(found, Cacheable)
    parts = found.key_parts
    assert parts.versions == versions
    assert (parts.schema, parts.profile, parts.dag_id) == ("3:29ce7909c52b", "airflow3", dag)
    assert parts.route == found.route.name and found.generation == 500
    assert parts.target_digest == normalize_target(raw, "", TABLE).digest  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "method", "kwargs", "reason"),
    [
        (f"/api/v2/dags/{DAG}/tasks", "POST", {}, Reason.METHOD),
        (f"/api/v2/dags/{DAG}/tasks", "OPTIONS", {}, Reason.METHOD),
        (f"/api/v2/dags/{DAG}/tasks?bogus=1", "GET", {}, RejectReason.UNKNOWN_PARAM),
        ("/api/v2/dags/a%2Fb/tasks", "GET", {}, RejectReason.ENCODED_SLASH),
        ("/api/v2/config", "GET", {}, RejectReason.NO_ROUTE),
        ("/ui/config", "GET", {}, Reason.PASS_ROUTE),
        ("/api/v2/dags/~/dagRuns?limit=1", "GET", {}, Reason.PASS_ROUTE),
        (f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies=true", "GET", {}, Reason.PARAM_VALUE),
        (f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies=1", "GET", {}, Reason.PARAM_VALUE),
        (
            f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies=false&external_dependencies=yes",
            "GET",
            {},
            Reason.PARAM_VALUE,
        ),
        ("/ui/dags?has_pending_actions=true", "GET", {}, Reason.PARAM_VALUE),
        ("/ui/structure/structure_data", "GET", {}, Reason.NO_DAG),
        ("/ui/structure/structure_data?dag_id=", "GET", {}, Reason.NO_DAG),
        (f"/ui/structure/structure_data?dag_id={DAG}&dag_id=small", "GET", {}, Reason.NO_DAG),
        (f"/api/v2/dags/{DAG}/tasks", "GET", {"versions": None}, Reason.STALE_VERSIONS),
        (f"/api/v2/dags/{DAG}/tasks", "GET", {"now": NOW + 9.5}, Reason.STALE_VERSIONS),
        ("/api/v2/dagTags", "GET", {"max_version_age": 0.5}, Reason.STALE_VERSIONS),
        ("/api/v2/dags/nope/tasks", "GET", {}, Reason.UNKNOWN_DAG),
        ("/ui/grid/runs/~", "GET", {}, Reason.UNKNOWN_DAG),
        (f"/api/v2/dags/{DAG}/tasks", "GET", {"scope": PassReason.NO_CREDENTIAL}, PassReason.NO_CREDENTIAL),
        (f"/api/v2/dags/{DAG}/tasks", "GET", {"scope": PassReason.NEAR_EXPIRY}, PassReason.NEAR_EXPIRY),
    ],
)
def test_pass_through_reasons(raw: str, method: str, kwargs: dict[str, Any], reason: object):
    assert _decide(raw, method, **kwargs) == PassThrough(reason)  # type: ignore[arg-type]


def test_route_reasons_come_before_scope_and_versions():
    assert _decide("/ui/config", scope=PassReason.NO_CREDENTIAL, versions=None) == PassThrough(Reason.PASS_ROUTE)
    stale = _decide(f"/api/v2/dags/{DAG}/tasks", scope=PassReason.NO_CREDENTIAL, versions=None)
    assert stale == PassThrough(Reason.STALE_VERSIONS)


def test_serve_stale_keys_an_old_map_as_before_and_flags_it():
    fresh_key = _decide(f"/api/v2/dags/{DAG}/tasks")
    old = _decide(f"/api/v2/dags/{DAG}/tasks", now=NOW + 60, serve_stale=True)
    assert isinstance(fresh_key, Cacheable) and isinstance(old, Cacheable)
    assert (fresh_key.stale, old.stale) == (False, True)
    assert old.key_parts == fresh_key.key_parts, "a stale request must find what was stored under the last map"
    # Without a map there is nothing to be stale from; and the other reasons still come first.
    assert _decide(f"/api/v2/dags/{DAG}/tasks", versions=None, serve_stale=True) == PassThrough(Reason.STALE_VERSIONS)
    no_credential = _decide(f"/api/v2/dags/{DAG}/tasks", now=NOW + 60, serve_stale=True, scope=PassReason.NO_CREDENTIAL)
    assert no_credential == PassThrough(PassReason.NO_CREDENTIAL)


def test_false_spellings_keep_the_definition_kind():
    for value in ("false", "False", "0", "off", "NO"):
        assert isinstance(
            _decide(f"/ui/structure/structure_data?dag_id={DAG}&external_dependencies={value}"), Cacheable
        )


def test_head_passes_through_because_airflow_answers_it_405():
    assert _decide(f"/api/v2/dags/{DAG}/tasks", method="HEAD") == PassThrough(Reason.METHOD)
    assert _decide(f"/api/v2/dags/{DAG}/tasks", method="get") == PassThrough(Reason.METHOD)


def test_role_scope_only_for_views_that_do_not_depend_on_the_user():
    assert _key(f"/api/v2/dags/{DAG}/tasks", scope=ROLE_USER).scope == "r:viewer"
    assert _key("/api/v2/dagTags", scope=ROLE_USER).scope == "r:viewer"
    for per_user in (f"/api/v2/dags/{DAG}/details", "/ui/dags?limit=10&is_favorite=true", "/api/v2/dags"):
        assert TABLE.classify(per_user.split("?")[0]).route.per_user  # type: ignore[union-attr]
        assert _key(per_user, scope=ROLE_USER).scope == "c:user"
    assert _key(f"/api/v2/dags/{DAG}/tasks", scope=USER).scope == "c:user"


def test_keys_differ_by_every_part():
    base = _key(f"/api/v2/dags/{DAG}/tasks?order_by=task_id")
    others = [
        _key(f"/api/v2/dags/{DAG}/tasks?order_by=-task_id"),
        _key(f"/api/v2/dags/{DAG}/tasks?order_by=task_id", scope=ROLE_USER),
        _key("/api/v2/dags/small/tasks?order_by=task_id"),
    ]
    digests = {base.digest, *(parts.digest for parts in others)}
    assert len(digests) == 4
    newer = VersionMap(501, VERSIONS.schema, 400, {DAG: DagVersion(101, 301, NOW)}, NOW)
    assert _key(f"/api/v2/dags/{DAG}/tasks?order_by=task_id", versions=newer).versions == (("definition", 101),)
    upgraded = VersionMap(501, "3:other", 400, VERSIONS.dags, NOW)
    assert _key(f"/api/v2/dags/{DAG}/tasks?order_by=task_id", versions=upgraded).digest != base.digest


def test_vary_headers_are_in_the_key():
    raw = f"/api/v2/dagSources/{DAG}"
    absent = _key(raw)
    json_ = _key(raw, headers=[("Accept", "application/json")])
    text = _key(raw, headers=[("accept", "text/plain")])
    empty = _key(raw, headers=[("Accept", "")])
    assert absent.vary == (("accept", None),) and json_.vary == (("accept", "application/json"),)
    assert len({absent.digest, json_.digest, text.digest, empty.digest}) == 4
    assert _key(f"/api/v2/dags/{DAG}/tasks", headers=[("Accept", "text/plain")]).vary == ()


# ----- is_storable ----------------------------------------------------------------------------------------------

JSON = [("Content-Type", "application/json"), ("Vary", "Accept-Encoding")]


@pytest.mark.parametrize(
    ("status", "headers", "size", "expected"),
    [
        (200, JSON, 100, True),
        (200, [("content-type", "application/x-ndjson")], 100, True),
        (200, [("Content-Type", "text/html; charset=utf-8")], 100, True),
        (200, [("Content-Type", "application/problem+json")], 100, True),
        (200, [("Content-Type", "Application/JSON; charset=utf-8"), ("Content-Encoding", "identity")], 100, True),
        (200, JSON, 1000, True),
        (200, JSON, 1001, NotStorable.TOO_LARGE),
        (203, JSON, 100, NotStorable.STATUS),
        (204, JSON, 0, NotStorable.STATUS),
        (206, JSON, 100, NotStorable.STATUS),
        (304, JSON, 0, NotStorable.STATUS),
        (401, JSON, 100, NotStorable.STATUS),
        (403, JSON, 100, NotStorable.STATUS),
        (200, [("Content-Type", "text/plain")], 100, NotStorable.CONTENT_TYPE),
        (200, [("Content-Type", "application/octet-stream")], 100, NotStorable.CONTENT_TYPE),
        (200, [], 100, NotStorable.CONTENT_TYPE),
        (200, [("Content-Type", "application/json"), ("Content-Type", "text/html")], 100, NotStorable.CONTENT_TYPE),
        (200, [*JSON, ("Set-Cookie", "_token=abc; Path=/")], 100, NotStorable.SET_COOKIE),
        (200, [*JSON, ("Cache-Control", "no-store")], 100, NotStorable.CACHE_CONTROL),
        (200, [*JSON, ("Cache-Control", "max-age=0, Private")], 100, NotStorable.CACHE_CONTROL),
        (200, [*JSON, ("Cache-Control", 'private="set-cookie"')], 100, NotStorable.CACHE_CONTROL),
        (200, [*JSON, ("Content-Encoding", "gzip")], 100, NotStorable.CONTENT_ENCODING),
        (200, [*JSON, ("Content-Encoding", "identity, br")], 100, NotStorable.CONTENT_ENCODING),
        (200, [*JSON, ("Vary", "*")], 100, NotStorable.VARY),
        (200, [*JSON, ("Vary", "Origin")], 100, NotStorable.VARY),
        (200, [*JSON, ("Vary", "Accept")], 100, NotStorable.VARY),
    ],
)
def test_is_storable(status: int, headers: list[tuple[str, str]], size: int, expected: object):
    assert is_storable(status, headers, size, 1000) is expected


def test_not_storable_is_falsy_and_keyed_headers_may_vary():
    assert not NotStorable.SET_COOKIE
    assert not is_storable(500, JSON, 1, 10)
    assert is_storable(200, [*JSON, ("Vary", "accept")], 1, 10, keyed_headers=("accept",)) is True


# ----- read-your-writes -----------------------------------------------------------------------------------------

_RUN = f"/api/v2/dags/{DAG}/dagRuns/manual__1"
_TI = _RUN + "/taskInstances/extract"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PATCH", f"/api/v2/dags/{DAG}", (DAG, True, True, "dags.py:patch_dag")),
        ("PATCH", "/api/v2/dags", (None, True, True, "dags.py:patch_dags")),
        ("DELETE", f"/api/v2/dags/{DAG}", (DAG, True, True, "dags.py:delete_dag")),
        ("POST", f"/api/v2/dags/{DAG}/favorite", (DAG, True, True, "dags.py:favorite_dag")),
        ("POST", f"/api/v2/dags/{DAG}/unfavorite", (DAG, True, True, "dags.py:unfavorite_dag")),
        ("POST", f"/api/v2/dags/{DAG}/dagRuns", (DAG, True, False, "dag_run.py:trigger_dag_run")),
        ("PATCH", f"/api/v2/dags/{DAG}/dagRuns", (DAG, True, False, "dag_run.py:bulk_dag_runs")),
        ("PATCH", "/api/v2/dags/~/dagRuns", (None, True, False, "dag_run.py:bulk_dag_runs")),
        ("PATCH", _RUN, (DAG, True, False, "dag_run.py:patch_dag_run")),
        ("DELETE", _RUN, (DAG, True, False, "dag_run.py:delete_dag_run")),
        ("POST", _RUN + "/clear", (DAG, True, False, "dag_run.py:clear_dag_run")),
        ("POST", "/api/v2/dags/~/clearDagRuns", (None, True, False, "dag_run.py:clear_dag_runs")),
        (
            "POST",
            f"/api/v2/dags/{DAG}/clearTaskInstances",
            (DAG, True, False, "task_instances.py:post_clear_task_instances"),
        ),
        ("PATCH", _RUN + "/taskInstances", (DAG, True, False, "task_instances.py:bulk_task_instances")),
        ("PATCH", _TI, (DAG, True, False, "task_instances.py:patch_task_instance")),
        ("PATCH", _TI + "/-1", (DAG, True, False, "task_instances.py:patch_task_instance")),
        ("DELETE", _TI, (DAG, True, False, "task_instances.py:delete_task_instance")),
        ("PATCH", _TI + "/3/hitlDetails", (DAG, True, False, "hitl.py:update_hitl_detail")),
        ("POST", "/api/v2/backfills", (None, True, False, "backfills.py:create_backfill")),
        ("POST", "/api/v2/assets/7/materialize", (None, True, False, "assets.py:materialize_asset")),
    ],
)
def test_write_effects(method: str, path: str, expected: tuple[str | None, bool, bool, str]):
    assert write_effects(method, path, 200) == WriteEffect(*expected)
    assert write_effects(method, path, 204) == WriteEffect(*expected)
    for status in (199, 304, 400, 403, 404, 409, 422, 500):
        assert write_effects(method, path, status) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v2/dags/{DAG}"),
        ("POST", f"/api/v2/dags/{DAG}/dagRuns/list"),  # a read sent as POST
        ("POST", _RUN + "/taskInstances/list"),
        ("PATCH", _TI + "/dry_run"),
        ("PATCH", _TI + "/-1/dry_run"),
        ("PATCH", _RUN + "/taskGroupInstances/g/dry_run"),
        ("POST", "/api/v2/pools"),
        ("PATCH", "/api/v2/variables/x"),
        ("POST", _TI + "/xcomEntries"),
        ("PUT", "/api/v2/backfills/1/pause"),
        ("POST", "/auth/token"),
        ("PATCH", "/api/v2/dags/a/b"),
    ],
)
def test_writes_without_effect(method: str, path: str):
    assert write_effects(method, path, 200) is None


def test_all_dags_marker():
    assert WriteEffect(None, True, False, "x").all_dags and not WriteEffect(DAG, True, False, "x").all_dags


_NON_GET = textwrap.dedent(
    """
    import inspect, json
    from fastapi.routing import APIRoute
    from airflow.api_fastapi.core_api.routes.public import public_router
    from airflow.api_fastapi.core_api.routes.ui import ui_router
    out = []
    for r in [*public_router.routes, *ui_router.routes]:
        if isinstance(r, APIRoute):
            src = inspect.getsourcefile(r.endpoint).split("core_api/routes/public/")[-1]
            out += [[m, r.path, f"{src}:{r.endpoint.__name__}"] for m in r.methods - {"GET", "HEAD"}]
    print("@@" + json.dumps(out))
    """
)


@pytest.mark.airflow
def test_write_table_names_real_airflow_handlers(tmp_path):
    venv = ensure_airflow_venv(3)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _NON_GET], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    airflow = {(method, path): handler for method, path, handler in json.loads(line[2:])}
    for method, route, _, _ in WRITES:
        key = (method, route.pattern.replace(":int}", "}"))
        assert airflow.get(key) == route.name, f"{key} is not {route.name} in Airflow"

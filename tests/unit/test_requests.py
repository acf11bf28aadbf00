"""Request normalization: equivalent targets share one canonical form, different ones never do."""

from __future__ import annotations

import random
import string
from urllib.parse import quote

import pytest

from proxy.airflow.routes3 import TABLE
from proxy.requests import (
    NormalizedTarget,
    Reject,
    RejectReason,
    Target,
    canonical_bytes,
    normalize_target,
    split_target,
)
from proxy.routes import Kind, Route, RouteTable

DAG = "big_dag"
RUN = "manual__2026-11-20T10:00:00+00:00"


def _norm(raw: str, base: str = "", table: RouteTable = TABLE) -> NormalizedTarget:
    found = normalize_target(raw, base, table)
    assert isinstance(found, NormalizedTarget), (raw, found)
    return found


@pytest.mark.parametrize(
    "variants",
    [
        [
            f"/api/v2/dags/{DAG}/tasks",
            "/api/v2/dags/%62ig_dag/tasks",
            f"/api/v2/dags/{DAG}/tasks?",
            "/api/v2/da%67s/big%5Fdag/tasks",
        ],
        [
            f"/api/v2/dags/{DAG}/dagRuns/manual__2026-11-20T10:00:00+00:00",
            f"/api/v2/dags/{DAG}/dagRuns/manual__2026-11-20T10%3A00%3A00%2B00%3A00",
            f"/api/v2/dags/{DAG}/dagRuns/manual__2026-11-20T10%3a00%3a00%2b00%3a00",
        ],
        [
            f"/ui/grid/runs/{DAG}?limit=10&order_by=-run_after",
            f"/ui/grid/runs/{DAG}?order_by=-run_after&limit=10",
            f"/ui/grid/runs/{DAG}?order_by=%2Drun%5Fafter&l%69mit=10",
        ],
        ["/api/v2/dagTags?tag_name_pattern=a+b", "/api/v2/dagTags?tag_name_pattern=a%20b"],
        ["/api/v2/dagTags?tag_name_pattern=%C3%A9t%C3%A9", "/api/v2/dagTags?tag_name_pattern=%c3%a9t%c3%a9"],
        [
            f"/api/v2/dags/{DAG}/dagRuns?state=running&limit=1&state=queued",
            f"/api/v2/dags/{DAG}/dagRuns?limit=1&state=running&state=queued",
            f"/api/v2/dags/{DAG}/dagRuns?state=running&state=queued&limit=1",
        ],
    ],
)
def test_equivalent_targets_share_a_canonical_form(variants: list[str]):
    forms = {_norm(raw).canonical for raw in variants}
    assert len(forms) == 1
    assert len({_norm(raw).digest for raw in variants}) == 1


def test_base_path_is_stripped():
    plain = _norm(f"/api/v2/dags/{DAG}/tasks")
    assert _norm(f"/airflow/api/v2/dags/{DAG}/tasks", "/airflow").canonical == plain.canonical
    assert _norm(f"/air%66low/api/v2/dags/{DAG}/tasks", "/airflow").canonical == plain.canonical
    assert _norm(f"/a/b/api/v2/dags/{DAG}/tasks", "/a/b").path == f"/api/v2/dags/{DAG}/tasks"
    assert normalize_target(f"/api/v2/dags/{DAG}/tasks", "/airflow", TABLE) == Reject(RejectReason.OUTSIDE_BASE)
    assert normalize_target(f"/airflowx/api/v2/dags/{DAG}/tasks", "/airflow", TABLE) == Reject(
        RejectReason.OUTSIDE_BASE
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/ui/grid/runs/d?order_by=a&order_by=b", "/ui/grid/runs/d?order_by=b&order_by=a"),  # multi-key sort
        ("/ui/grid/ti_summaries/d?run_ids=r1&run_ids=r2", "/ui/grid/ti_summaries/d?run_ids=r2&run_ids=r1"),
        ("/ui/grid/ti_summaries/d?run_ids=r1", "/ui/grid/ti_summaries/d?run_ids=r1&run_ids=r1"),  # duplicates
        ("/api/v2/dagTags?limit=1&limit=2", "/api/v2/dagTags?limit=2&limit=1"),  # the last value wins upstream
        ("/api/v2/dagTags?tag_name_pattern=a+b", "/api/v2/dagTags?tag_name_pattern=a%2Bb"),
        ("/api/v2/dagTags?tag_name_pattern=", "/api/v2/dagTags"),
        ("/api/v2/dagSources/a+b", "/api/v2/dagSources/a%20b"),  # "+" is literal in a path
        ("/api/v2/dagSources/ab", "/api/v2/dagSources/AB"),
        ("/api/v2/dags/d/tasks/t", "/api/v2/dags/d/tasks/t%2520"),
        (f"/api/v2/dags/{DAG}", f"/api/v2/dags/{DAG}/details"),
    ],
)
def test_different_targets_never_share_a_canonical_form(a: str, b: str):
    assert _norm(a).canonical != _norm(b).canonical
    assert _norm(a).digest != _norm(b).digest


def test_query_is_stably_sorted_by_name_only():
    found = _norm("/ui/grid/runs/d?order_by=z&limit=5&order_by=a&order_by=z&offset=0")
    assert found.query == (("limit", "5"), ("offset", "0"), ("order_by", "z"), ("order_by", "a"), ("order_by", "z"))
    assert found.values("order_by") == ("z", "a", "z")
    assert found.path_params == {"dag_id": "d"}
    assert found.profile == "airflow3" and found.route.name == "ui.grid.runs"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("api/v2/dags", RejectReason.NOT_ORIGIN_FORM),
        ("*", RejectReason.NOT_ORIGIN_FORM),
        ("/api/v2/dags/a b", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/a\x00", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/é", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/a#frag", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/a\\b", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/%zz", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/a%2", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags?limit=1 2", RejectReason.BAD_CHARACTER),
        ("/api/v2/dags/%ff", RejectReason.NOT_UTF8),
        ("/api/v2/dags/%C3", RejectReason.NOT_UTF8),
        ("/api/v2/dags?dag_id_pattern=%ff", RejectReason.NOT_UTF8),
        ("/api/v2/dags/%00", RejectReason.CONTROL_CHARACTER),
        ("/api/v2/dags/a%0Ab", RejectReason.CONTROL_CHARACTER),
        ("/api/v2/dags?dag_id_pattern=%00", RejectReason.CONTROL_CHARACTER),
        ("/api/v2//dags", RejectReason.EMPTY_SEGMENT),
        ("/api/v2/dags/", RejectReason.EMPTY_SEGMENT),
        ("/api/v2/./dags", RejectReason.DOT_SEGMENT),
        ("/api/v2/dags/../dags", RejectReason.DOT_SEGMENT),
        ("/api/v2/dags/%2E%2E/x", RejectReason.DOT_SEGMENT),
        ("/api/v2/dags/%2e", RejectReason.DOT_SEGMENT),
        ("/api/v2/dags/a%2Fb/tasks", RejectReason.ENCODED_SLASH),
        ("/api/v2/dags/a%2fb", RejectReason.ENCODED_SLASH),
        ("/api/v2/dags/a%5Cb", RejectReason.ENCODED_SLASH),
        ("/api/v2/dags?limit", RejectReason.BAD_QUERY),
        ("/api/v2/dags?limit=1&&offset=2", RejectReason.BAD_QUERY),
        ("/api/v2/dags?limit=1&", RejectReason.BAD_QUERY),
        ("/api/v2/dags?" + "&".join(["limit=1"] * 300), RejectReason.BAD_QUERY),
        ("/api/v2/nothing", RejectReason.NO_ROUTE),
        ("/", RejectReason.NO_ROUTE),
        ("/api/v2/dags?limit=1&bogus=2", RejectReason.UNKNOWN_PARAM),
        ("/api/v2/dags?bogus=1&bogus=2", RejectReason.UNKNOWN_PARAM),
        ("/api/v2/dags?Limit=1", RejectReason.UNKNOWN_PARAM),  # FastAPI aliases are case-sensitive
        (f"/api/v2/dags/{DAG}/tasks?dag_id=other", RejectReason.UNKNOWN_PARAM),
    ],
)
def test_rejects_pass_through(raw: str, reason: RejectReason):
    found = normalize_target(raw, "", TABLE)
    assert isinstance(found, Reject) and found.reason is reason, found


def test_split_target_for_writes_and_unknown_routes():
    found = split_target("/airflow/api/v2/dags/%61%2Bb/dagRuns?x=1&x=2", "/airflow")
    assert found == Target(
        "/api/v2/dags/a+b/dagRuns", ("api", "v2", "dags", "a+b", "dagRuns"), (("x", "1"), ("x", "2"))
    )
    assert split_target("/", "") == Target("/", (), ())
    assert split_target("/airflow", "/airflow") == Target("/", (), ())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("r", ["ab"], []), ("r", ["a", "b"], [])),
        (("r", ["a/b"], []), ("r", ["a", "b"], [])),
        (("r", [], [("a", "b&c=d")]), ("r", [], [("a", "b"), ("c", "d")])),
        (("r", [], [("a=b", "c")]), ("r", [], [("a", "b=c")])),
        (("r", [], [("a", "")]), ("r", [], [])),
        (("r", ["a"], []), ("r", [], [("a", "")])),
        (("ra", [], []), ("r", ["a"], [])),
        (("r", ["\x00\x00\x00\x01a"], []), ("r", ["", "a"], [])),
    ],
)
def test_canonical_bytes_resist_crafted_collisions(a, b):
    assert canonical_bytes(*a) != canonical_bytes(*b)


# ----- randomized: encode random logical requests many ways ----------------------------------------------------

_ROUTES = (
    Route("t.one", "/t/{x}", Kind.STATE, frozenset({"a", "b", "order_by"}), dag_from="x"),
    Route("t.two", "/t/{x}/{n:int}", Kind.STATE, frozenset({"a", "b", "order_by"}), dag_from="x"),
    Route("t.lit", "/t/{x}/lit", Kind.STATE, frozenset({"a", "b", "order_by"}), dag_from="x"),
)
_TABLE = RouteTable("test", _ROUTES)
_ALPHABET = ["a", "b", "Z", "0", "-", "_", ".", "~", ":", "@", "+", " ", "%", "&", "=", "?", "#", "é", "日", "!", "'"]
_PATH_RAW_OK = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@")
_QUERY_RAW_OK = set(string.ascii_letters + string.digits + "-._~!$'()*,;:@/?")


def _random_text(rng: random.Random, min_len: int) -> str:
    while True:
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(min_len, 5)))
        if text not in (".", ".."):
            return text


def _encode(rng: random.Random, text: str, raw_ok: set[str], plus_space: bool) -> str:
    out = []
    for char in text:
        if char == " " and plus_space and rng.random() < 0.5:
            out.append("+")
        elif char in raw_ok and rng.random() < 0.6:
            out.append(char)
        else:
            escaped = quote(char, safe="")
            if escaped == char:
                escaped = f"%{ord(char):02X}"
            out.append(escaped.lower() if rng.random() < 0.3 else escaped)
    return "".join(out)


def _logical(rng: random.Random) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    kind = rng.randrange(3)
    segments: tuple[str, ...] = ("t", _random_text(rng, 1))
    if kind == 1:
        segments += (str(rng.randrange(-2, 30)),)
    elif kind == 2:
        segments += ("lit",)
    query = tuple((rng.choice(["a", "b", "order_by"]), _random_text(rng, 0)) for _ in range(rng.randrange(4)))
    return ("t.one", "t.two", "t.lit")[kind], segments, tuple(sorted(query, key=lambda pair: pair[0]))


def _raw(rng: random.Random, segments: tuple[str, ...], query: tuple[tuple[str, str], ...]) -> str:
    path = "/" + "/".join(_encode(rng, segment, _PATH_RAW_OK, False) for segment in segments)
    # interleave names randomly, keeping each name's values in order
    queues = {name: [v for k, v in query if k == name] for name in dict.fromkeys(k for k, _ in query)}
    pairs = []
    while queues:
        name = rng.choice(sorted(queues))
        pairs.append((name, queues[name].pop(0)))
        if not queues[name]:
            del queues[name]
    encoded = "&".join(
        f"{_encode(rng, k, _QUERY_RAW_OK, True)}={_encode(rng, v, _QUERY_RAW_OK, True)}" for k, v in pairs
    )
    return path + (f"?{encoded}" if encoded or rng.random() < 0.2 else "")


def test_random_requests_canonical_form_is_exactly_the_logical_request():
    rng = random.Random(4)
    seen: dict[bytes, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
    for _ in range(1500):
        logical = _logical(rng)
        route, segments, query = logical
        expected = canonical_bytes(route, segments, query)
        for _ in range(3):
            raw = _raw(rng, segments, query)
            found = _norm(raw, "", _TABLE)
            assert found.canonical == expected, (raw, logical)
            assert found.route.name == route
        assert seen.setdefault(expected, logical) == logical, "two different requests share a canonical form"
    assert len(seen) > 1000

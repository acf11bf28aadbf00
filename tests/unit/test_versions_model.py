"""The version map: which poll changes which version, and that nothing ever goes backwards."""

from __future__ import annotations

import pytest

from proxy.airflow.snapshot import DagFingerprint, SchemaInfo, Snapshot
from proxy.versions.codec import Beat, DeltaMessage, decode_map, decode_message, encode_beat, encode_delta, meta_fields
from proxy.versions.model import LeaderState, accept, advance, apply, bump, fresh

T0 = 1_800_000_000.0


def make_snapshot(dags: dict[str, tuple[str, str, str]], *, revision: str = "r1", extra: str = "",
                  revoked: dict[str, float] | None = None) -> Snapshot:
    return Snapshot(
        schema=SchemaInfo(3, revision),
        dags={k: DagFingerprint(*v) for k, v in dags.items()},
        global_extra=extra,
        revoked=revoked or {},
        statements=4,
    )


BASE = {"a": ("d1", "s1", "l1"), "b": ("d1", "s1", "l1")}


def first(now: float = T0) -> LeaderState:
    state, _ = advance(None, make_snapshot(BASE), now, state_max_age=0)
    return state


def test_first_poll_gives_every_dag_a_version():
    state = first()
    assert set(state.map.dags) == {"a", "b"}
    assert state.map.generation == int(T0 * 1000)
    assert state.map.schema == "3:r1"


def test_unchanged_poll_changes_nothing_but_freshness():
    state = first()
    later, delta = advance(state, make_snapshot(BASE), T0 + 1, state_max_age=0)
    assert delta.empty
    assert later.map.dags == state.map.dags
    assert later.map.generation == state.map.generation
    assert later.map.polled_at == T0 + 1


@pytest.mark.parametrize(
    ("change", "definition", "state_", "global_"),
    [
        ({"a": ("d2", "s1", "l1")}, True, True, False),  # new definition (state views embed it)
        ({"a": ("d1", "s2", "l1")}, False, True, False),  # a run or task instance moved
        ({"a": ("d1", "s1", "l2")}, False, True, True),  # paused, tags, next run (single-DAG views show them)
    ],
)
def test_each_fingerprint_moves_its_versions_only(change, definition, state_, global_):
    state = first()
    later, delta = advance(state, make_snapshot({**BASE, **change}), T0 + 1, state_max_age=0)
    a_before, a_after = state.map.dags["a"], later.map.dags["a"]
    assert (a_after.definition > a_before.definition) is definition
    assert (a_after.state > a_before.state) is state_
    assert (later.map.global_version > state.map.global_version) is global_
    assert later.map.dags["b"] == state.map.dags["b"]
    assert set(delta.changed) == ({"a"} if definition or state_ else set())


def test_added_and_removed_dags_move_the_global_version():
    state = first()
    later, delta = advance(state, make_snapshot({"a": BASE["a"], "c": ("d", "s", "l")}), T0 + 1, state_max_age=0)
    assert delta.removed == ("b",)
    assert "c" in delta.changed
    assert later.map.global_version > state.map.global_version
    assert "b" not in later.map.dags


def test_import_errors_move_the_global_version():
    state = first()
    later, _ = advance(state, make_snapshot(BASE, extra="err1"), T0 + 1, state_max_age=0)
    assert later.map.global_version > state.map.global_version


def test_schema_upgrade_moves_everything():
    state = first()
    later, delta = advance(state, make_snapshot(BASE, revision="r2"), T0 + 1, state_max_age=0)
    assert delta.schema_changed
    for dag_id in BASE:
        assert later.map.dags[dag_id].definition > state.map.dags[dag_id].definition


def test_state_max_age_bounds_what_the_queries_cannot_see():
    """With nothing changing in the DB, every DAG's state advances once per state_max_age (its definition
    never), and the global version once per period."""
    dags = {f"dag_{i:03d}": ("d1", "s1", "l1") for i in range(100)}
    state, _ = advance(None, make_snapshot(dags), T0, state_max_age=60)
    start = state
    advances = dict.fromkeys(dags, 0)
    global_moves = 0
    for second in range(1, 121):  # two periods, one poll per second
        later, delta = advance(state, make_snapshot(dags), T0 + second, state_max_age=60)
        for dag_id in delta.changed:
            advances[dag_id] += 1
            assert later.map.dags[dag_id].state > state.map.dags[dag_id].state
        global_moves += delta.global_changed
        state = later
    assert set(advances.values()) == {2}
    assert global_moves == 2
    assert all(state.map.dags[d].definition == start.map.dags[d].definition for d in dags)


def test_state_max_age_spreads_the_dags_over_the_period():
    """The period's end does not re-key every DAG's views at one poll (all of them missing at once): each DAG
    has its own phase."""
    dags = {f"dag_{i:03d}": ("d1", "s1", "l1") for i in range(100)}
    state, _ = advance(None, make_snapshot(dags), T0, state_max_age=60)
    largest = 0
    for second in range(1, 61):
        state, delta = advance(state, make_snapshot(dags), T0 + second, state_max_age=60)
        largest = max(largest, len(delta.changed))
    assert largest <= 10  # 100 DAGs over 60 polls; all at once was 100


def test_state_max_age_zero_never_expires():
    state, _ = advance(None, make_snapshot(BASE), T0, state_max_age=0)
    later, delta = advance(state, make_snapshot(BASE), T0 + 86_400, state_max_age=0)
    assert delta.empty


def test_versions_grow_even_if_the_clock_goes_back():
    state = first(T0)
    later, _ = advance(state, make_snapshot({**BASE, "a": ("d9", "s9", "l1")}), T0 - 3600, state_max_age=0)
    assert later.map.dags["a"].definition == state.map.generation + 1
    assert later.map.generation > state.map.generation


def test_bump_is_read_your_writes_and_monotonic():
    state = first()
    bumped, delta = bump(state.map, ["a", "unknown"], T0 + 0.5, listing=True)
    assert set(delta.changed) == {"a"}
    assert bumped.dags["a"].state > state.map.dags["a"].state
    assert bumped.dags["a"].definition == state.map.dags["a"].definition
    assert bumped.global_version > state.map.global_version
    unchanged, delta = bump(state.map, ["unknown"], T0 + 0.5)
    assert unchanged is state.map and delta.empty


def test_follower_applies_delta_to_equal_map():
    state = first()
    later, delta = advance(state, make_snapshot({**BASE, "a": ("d2", "s1", "l1")}, revoked={"j": 5.0}), T0 + 1,
                           state_max_age=0)
    message = decode_message(encode_delta(later.map, delta))
    assert isinstance(message, DeltaMessage)
    followed = apply(state.map, message.delta, generation=message.generation, global_version=message.global_version,
                     schema=message.schema, polled_at=message.polled_at)
    assert followed.dags == later.map.dags
    assert followed.revoked == {"j": 5.0}
    assert followed.generation == later.map.generation


def test_stored_map_round_trips():
    state = first()
    fields = {**meta_fields(state.map), **{f"d:{k}": f"{v.definition}:{v.state}:{int(v.changed_at * 1000)}"
                                           for k, v in state.map.dags.items()}}
    assert decode_map(fields, {}) == state.map
    assert decode_map({"_g": "x"}, {}) is None


def test_unreadable_messages_decode_to_none():
    assert decode_message(b"not json") is None
    assert decode_message(b'{"t": "delta"}') is None
    assert isinstance(decode_message(encode_beat(first().map, None)), Beat)


def test_accept_never_steps_back_and_fresh_has_an_age_limit():
    old, new = first(T0).map, first(T0 + 5).map
    assert accept(None, old) and accept(old, new) and not accept(new, old)
    assert fresh(old, T0 + 9, 10) and not fresh(old, T0 + 11, 10) and not fresh(None, T0, 10)

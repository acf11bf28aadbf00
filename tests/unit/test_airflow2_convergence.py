"""The convergence window of the version model: after a definition change, a DAG's versions hold still, then
move once (Airflow 2's per-worker DagBags need up to min_serialized_dag_fetch_interval to converge)."""

from __future__ import annotations

from proxy.airflow.snapshot import DagFingerprint, SchemaInfo, Snapshot
from proxy.versions.model import DagVersion, LeaderState, advance

T0 = 1_800_000_000.0
W = 12.0


def snap(**dags: tuple[str, str]) -> Snapshot:
    """dag_id=(definition, state); listing fixed."""
    return Snapshot(
        schema=SchemaInfo(2, "r2"),
        dags={k: DagFingerprint(d, s, "l") for k, (d, s) in dags.items()},
        global_extra="",
    )


def step(state: LeaderState | None, snapshot: Snapshot, now: float, convergence: float = W) -> LeaderState:
    return advance(state, snapshot, now, state_max_age=0, convergence=convergence)[0]


def exposed(state: LeaderState, dag: str = "a") -> DagVersion:
    return state.map.dags[dag]


def test_a_definition_change_holds_definition_and_state_then_moves_once():
    s0 = step(None, snap(a=("d1", "s1"), b=("d1", "s1")), T0)
    before = exposed(s0)
    s1 = step(s0, snap(a=("d2", "s1"), b=("d1", "s1")), T0 + 1)
    assert exposed(s1) == before  # the change is not exposed yet
    s2 = step(s1, snap(a=("d2", "s2"), b=("d1", "s1")), T0 + 5)  # a run moves inside the window
    assert exposed(s2) == before  # state holds too: no new key whose fill could land on a stale worker
    s3 = step(s2, snap(a=("d2", "s2"), b=("d1", "s1")), T0 + 1 + W - 0.01)
    assert exposed(s3) == before
    s4 = step(s3, snap(a=("d2", "s2"), b=("d1", "s1")), T0 + 1 + W)
    after = exposed(s4)
    assert after.definition > before.definition and after.state > before.state  # moved, once
    s5 = step(s4, snap(a=("d2", "s2"), b=("d1", "s1")), T0 + 30)
    assert exposed(s5) == after


def test_other_dags_are_not_held():
    s0 = step(None, snap(a=("d1", "s1"), b=("d1", "s1")), T0)
    s1 = step(s0, snap(a=("d2", "s1"), b=("d1", "s2")), T0 + 1)
    assert exposed(s1, "b").state > exposed(s0, "b").state
    assert exposed(s1) == exposed(s0)


def test_a_second_change_inside_the_window_restarts_it():
    s0 = step(None, snap(a=("d1", "s1")), T0)
    s1 = step(s0, snap(a=("d2", "s1")), T0 + 1)
    s2 = step(s1, snap(a=("d3", "s1")), T0 + 2)  # change B a second after A (AIRFLOW2-FACTS.md section 1)
    s3 = step(s2, snap(a=("d3", "s1")), T0 + 1 + W)  # A's window is over, B's is not
    assert exposed(s3) == exposed(s0)
    s4 = step(s3, snap(a=("d3", "s1")), T0 + 2 + W)
    assert exposed(s4).definition > exposed(s0).definition


def test_the_held_dag_keeps_its_old_definition_fingerprint_for_a_new_leader():
    s0 = step(None, snap(a=("d1", "s1")), T0)
    s1 = step(s0, snap(a=("d2", "s2")), T0 + 1)
    assert s1.fingerprints["a"].definition == "d1" and s1.fingerprints["a"].state == "s2"
    # A new leader loads the map and fingerprints (not the holds) and sees the change again: a new window.
    reloaded = LeaderState(s1.map, s1.fingerprints, s1.global_fingerprint)
    s2 = step(reloaded, snap(a=("d2", "s2")), T0 + 5)
    assert exposed(s2) == exposed(s0)
    assert step(s2, snap(a=("d2", "s2")), T0 + 5 + W).map.dags["a"].definition > exposed(s0).definition


def test_without_convergence_a_change_is_exposed_at_once():
    s0 = step(None, snap(a=("d1", "s1")), T0, 0)
    s1 = step(s0, snap(a=("d2", "s1")), T0 + 1, 0)
    assert exposed(s1).definition > exposed(s0).definition


def test_a_change_reverted_inside_the_window_still_moves_once_at_its_end():
    s0 = step(None, snap(a=("d1", "s1")), T0)
    s1 = step(s0, snap(a=("d2", "s1")), T0 + 1)
    s2 = step(s1, snap(a=("d1", "s1")), T0 + 2)
    assert exposed(s2) == exposed(s0)
    s3 = step(s2, snap(a=("d1", "s1")), T0 + 1 + W)
    assert exposed(s3).state > exposed(s0).state  # some worker may have served d2 meanwhile: a new key


async def _never() -> Snapshot:
    raise AssertionError("not polled")


def test_the_window_defaults_to_airflow_2s_fetch_interval_plus_a_margin():
    from proxy.config import VersionsConfig
    from proxy.versions.service import VersionService

    default = VersionService(VersionsConfig(), _never, None)
    assert (default.convergence(2), default.convergence(3)) == (12.0, 0.0)
    forced = VersionService(VersionsConfig(upstream_convergence=30), _never, None)
    assert (forced.convergence(2), forced.convergence(3)) == (30.0, 30.0)

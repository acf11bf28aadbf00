"""The version map and how a poll advances it. Pure: no I/O, no clock (``now`` is an argument).

A version is an integer that only grows. The leader assigns it from a hybrid logical clock: every change
gets ``tick = max(previous generation + 1, now in ms)``, and the map's ``generation`` is the tick of its
last change. Hence:

* every version in a map is ``<= generation``, and a new change is ``> generation``: versions never go
  backwards, per DAG or globally;
* a new leader continues from the map it reads from Redis, so failover keeps them growing; if Redis lost
  the map, the wall clock still puts new versions above the old ones (processes also refuse any map whose
  generation is below the one they hold, see :func:`accept`);
* the same DB state read by the same leader yields the same map, so every replica keys entries alike.

What changes which version:

* ``definition`` — the DAG's definition fingerprint changed (new or rewritten serialized DAG, new source).
* ``state`` — the DAG's run/task-instance fingerprint changed, its definition or listing changed (single-DAG
  views embed both), a write through the proxy touched it (:func:`bump`), or ``state_max_age`` elapsed
  (every DAG's state advances once per that period, the bound for what the incremental queries cannot see;
  each DAG at its own phase of the period, :func:`state_expired`, so that the views of all DAGs are not
  re-rendered at the same poll).
* ``global_version`` — the set of DAGs, any DAG's listing fingerprint, import errors, a bump, or the
  ``state_max_age`` period.
* everything — the Airflow schema revision changed (an upgrade: new JSON shapes).

**Convergence window** (``convergence`` > 0, Airflow 2): the upstream's workers do not all serve a new
definition at once (each gunicorn worker re-reads a DAG ``min_serialized_dag_fetch_interval`` after its own
last load), so a fill right after a change may come from a worker that still renders the old one. From the
poll that first sees a DAG's definition change until ``convergence`` seconds later (restarted by every further
definition change), that DAG's ``definition`` *and* ``state`` hold their pre-change values — fills in that
window land under the old key — and then move once, at the first poll after the window. The leader keeps the
pending change in :attr:`LeaderState.holds` and stores the *old* definition fingerprint for a held DAG, so a
new leader after a failover sees the change again and opens a new (later-ending, hence safe) window.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from proxy.airflow.snapshot import DagFingerprint, Snapshot


@dataclass(frozen=True, slots=True)
class DagVersion:
    definition: int
    state: int
    changed_at: float  # epoch seconds of the last change of either


@dataclass(frozen=True, slots=True)
class VersionMap:
    """What every process holds in memory (and the leader stores in Redis)."""

    generation: int
    schema: str  # "<major>:<alembic revision>"
    global_version: int
    dags: Mapping[str, DagVersion]
    polled_at: float  # epoch seconds of the last successful DB poll behind this map
    epoch: int = 0  # state_max_age period counter
    revoked: Mapping[str, float] = field(default_factory=dict)  # jti -> exp (epoch seconds)

    def get(self, dag_id: str) -> DagVersion | None:
        return self.dags.get(dag_id)


@dataclass(frozen=True, slots=True)
class Hold:
    """A definition change not yet exposed: ``release`` (epoch seconds) and the new definition fingerprint."""

    release: float
    definition: str


@dataclass(frozen=True, slots=True)
class LeaderState:
    """The leader's bookkeeping: the map plus the fingerprints it was derived from."""

    map: VersionMap
    fingerprints: Mapping[str, DagFingerprint]
    global_fingerprint: str
    holds: Mapping[str, Hold] = field(default_factory=dict)  # dag_id -> pending definition change


@dataclass(frozen=True, slots=True)
class Delta:
    """What one advance changed; published to the other processes."""

    previous_generation: int
    changed: Mapping[str, DagVersion]
    removed: tuple[str, ...]
    revoked_added: Mapping[str, float]
    revoked_removed: tuple[str, ...]
    global_changed: bool
    schema_changed: bool

    @property
    def empty(self) -> bool:
        return not (
            self.changed
            or self.removed
            or self.revoked_added
            or self.revoked_removed
            or self.global_changed
            or self.schema_changed
        )


def _tick(previous_generation: int, now: float) -> int:
    return max(previous_generation + 1, int(now * 1000))


def period(now: float, state_max_age: float) -> int:
    """The ``state_max_age`` period ``now`` falls in (0 when the bound is disabled)."""
    return 0 if state_max_age <= 0 else math.floor(now / state_max_age)


def state_expired(dag_id: str, previous_poll: float, now: float, state_max_age: float) -> bool:
    """Whether ``dag_id``'s ``state_max_age`` period ended between the previous poll and this one.

    Each DAG's periods are shifted by a phase derived from its id (the same on every leader), so once per
    period every DAG's state advances, but spread over the period: after the bound passes, the next fill of
    each view is one DAG's worth of upstream renders per poll, not every DAG's at once."""
    if state_max_age <= 0:
        return False
    digest = hashlib.blake2b(dag_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    phase = int.from_bytes(digest, "big") / 2**64 * state_max_age
    return math.floor((now + phase) / state_max_age) != math.floor((previous_poll + phase) / state_max_age)


def _global_fingerprint(snapshot: Snapshot) -> str:
    return snapshot.global_extra + "|" + ",".join(f"{k}={v.listing}" for k, v in sorted(snapshot.dags.items()))


def _held(
    before: DagFingerprint, fingerprint: DagFingerprint, hold: Hold | None, now: float, convergence: float
) -> Hold | None:
    """The hold a DAG is under after this poll, or None: not held (no pending change, or its window is over)."""
    if fingerprint.definition != before.definition and (hold is None or hold.definition != fingerprint.definition):
        return Hold(now + convergence, fingerprint.definition)  # a new change (re)starts the window
    if hold is not None and now < hold.release:
        return hold
    return None


def advance(
    previous: LeaderState | None,
    snapshot: Snapshot,
    now: float,
    *,
    state_max_age: float,
    convergence: float = 0.0,
) -> tuple[LeaderState, Delta]:
    """The leader's next state after a poll, and the delta to publish (possibly empty). ``convergence``: the
    upstream's convergence window in seconds (module doc); 0 exposes a definition change at once."""
    schema = f"{snapshot.schema.major}:{snapshot.schema.revision}"
    epoch = period(now, state_max_age)
    global_fp = _global_fingerprint(snapshot)
    if previous is None:
        tick = _tick(0, now)
        dags = {dag_id: DagVersion(tick, tick, now) for dag_id in snapshot.dags}
        state = LeaderState(
            VersionMap(tick, schema, tick, dags, now, epoch, dict(snapshot.revoked)), dict(snapshot.dags), global_fp
        )
        return state, Delta(0, dags, (), dict(snapshot.revoked), (), True, True)

    old = previous.map
    tick = _tick(old.generation, now)
    schema_changed = schema != old.schema
    expired = epoch != old.epoch
    changed: dict[str, DagVersion] = {}
    fingerprints = dict(snapshot.dags)
    holds: dict[str, Hold] = {}
    for dag_id, fingerprint in snapshot.dags.items():
        before = previous.fingerprints.get(dag_id)
        current = old.dags.get(dag_id)
        if current is None or before is None or schema_changed:
            changed[dag_id] = DagVersion(tick, tick, now)
            continue
        pending = previous.holds.get(dag_id)
        if convergence > 0 and (pending is not None or fingerprint.definition != before.definition):
            hold = _held(before, fingerprint, pending, now, convergence)
            if hold is not None:  # inside the window: keep the exposed versions and the old definition
                holds[dag_id] = hold
                fingerprints[dag_id] = replace(fingerprint, definition=before.definition)
            else:  # the window is over: move once
                changed[dag_id] = DagVersion(tick, tick, now)
            continue
        definition_changed = fingerprint.definition != before.definition
        # A listing change (paused, tags, next run) also moves the DAG's state: single-DAG views such as
        # /api/v2/dags/{id} and its details embed those fields.
        listing_changed = fingerprint.listing != before.listing
        if (
            definition_changed
            or listing_changed
            or fingerprint.state != before.state
            or state_expired(dag_id, old.polled_at, now, state_max_age)
        ):
            changed[dag_id] = DagVersion(
                tick if definition_changed else current.definition,
                tick,
                now,
            )
    removed = tuple(sorted(set(old.dags) - set(snapshot.dags)))
    revoked_added = {jti: exp for jti, exp in snapshot.revoked.items() if old.revoked.get(jti) != exp}
    revoked_removed = tuple(sorted(set(old.revoked) - set(snapshot.revoked)))
    global_changed = schema_changed or expired or global_fp != previous.global_fingerprint or bool(removed)

    delta = Delta(old.generation, changed, removed, revoked_added, revoked_removed, global_changed, schema_changed)
    if delta.empty:
        fresh = replace(old, polled_at=now, epoch=epoch)
        return LeaderState(fresh, fingerprints, previous.global_fingerprint, holds), delta
    dags = {k: v for k, v in old.dags.items() if k not in removed}
    dags.update(changed)
    new_map = VersionMap(
        generation=tick,
        schema=schema,
        global_version=tick if global_changed else old.global_version,
        dags=dags,
        polled_at=now,
        epoch=epoch,
        revoked=dict(snapshot.revoked),
    )
    return LeaderState(new_map, fingerprints, global_fp, holds), delta


def bump(
    previous: VersionMap, dag_ids: Iterable[str], now: float, *, state: bool = True, listing: bool = False
) -> tuple[VersionMap, Delta]:
    """Read-your-writes: advance the state (and/or global) version of ``dag_ids`` right away."""
    tick = _tick(previous.generation, now)
    changed = {
        dag_id: DagVersion(current.definition, tick if state else current.state, now)
        for dag_id in dag_ids
        if (current := previous.dags.get(dag_id)) is not None
    }
    if not changed and not listing:
        return previous, Delta(previous.generation, {}, (), {}, (), False, False)
    dags = dict(previous.dags)
    dags.update(changed)
    new_map = replace(
        previous,
        generation=tick,
        dags=dags,
        global_version=tick if listing else previous.global_version,
    )
    return new_map, Delta(previous.generation, changed, (), {}, (), listing, False)


def apply(
    current: VersionMap, delta: Delta, *, generation: int, global_version: int, schema: str, polled_at: float
) -> VersionMap:
    """A follower applies a published delta on top of the map it holds (``delta.previous_generation``
    must equal ``current.generation``; otherwise the follower resynchronises from Redis instead)."""
    dags = {k: v for k, v in current.dags.items() if k not in delta.removed}
    dags.update(delta.changed)
    revoked = {k: v for k, v in current.revoked.items() if k not in delta.revoked_removed}
    revoked.update(delta.revoked_added)
    return VersionMap(generation, schema, global_version, dags, polled_at, current.epoch, revoked)


def accept(held: VersionMap | None, offered: VersionMap) -> bool:
    """Whether a process may replace the map it holds by ``offered``: never a step back."""
    return held is None or offered.generation >= held.generation


def fresh(current: VersionMap | None, now: float, max_version_age: float) -> bool:
    """Whether versions are recent enough to key cached views by them."""
    return current is not None and now - current.polled_at <= max_version_age

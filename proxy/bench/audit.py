"""Consistency accounting for ``--audit`` (pure): regressions and staleness.

* A **regression** is a response that shows an older state than one the same client had already
  received before it sent the request: a lower ``X-Dagcache-Generation`` (the proxy's version-map
  generation), a lower run count (content), or the old ``is_paused`` after the new one had been seen in
  an answer that came back before the next pause change was sent. Requests that overlap in flight are
  not ordered, so they never count.
* **Staleness** of a change, per client: from the moment the change's API call returned 200 to the first
  response (received after that moment) that shows it. A change some client never saw before the next
  change of its kind is counted as *missed*, not as a number.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["pause", "trigger"]


@dataclass(slots=True)
class MonotoneWatch:
    """Counts values that went back, per client: ``observe(sent, received, value)`` in the order the
    responses arrive (``received`` non-decreasing)."""

    _received: list[float] = field(default_factory=list)
    _prefix_max: list[int] = field(default_factory=list)
    regressions: int = 0

    def observe(self, sent: float, received: float, value: int) -> bool:
        """Record one response; True when it went back."""
        known = bisect.bisect_right(self._received, sent)
        went_back = known > 0 and value < self._prefix_max[known - 1]
        if went_back:
            self.regressions += 1
        self._received.append(received)
        self._prefix_max.append(max(value, self._prefix_max[-1]) if self._prefix_max else value)
        return went_back


@dataclass(frozen=True, slots=True)
class Change:
    """One state change made through Airflow's API: started, and answered 200 at ``done``.
    ``expect``: ``is_paused`` afterwards (pause), or the run count it reached (trigger)."""

    kind: Kind
    started: float
    done: float
    expect: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What one audit client read: ``value`` is ``is_paused`` (0/1) for ``pause``, the run count for ``trigger``."""

    client: int
    kind: Kind
    sent: float
    received: float
    value: int


def _reflects(change: Change, value: int) -> bool:
    return value == change.expect if change.kind == "pause" else value >= change.expect


@dataclass(frozen=True, slots=True)
class Staleness:
    seconds: list[float]
    missed: int
    regressions: int


def staleness(changes: Sequence[Change], observations: Sequence[Observation]) -> Staleness:
    """Staleness per (change, client) and the pause regressions within change windows."""
    seconds: list[float] = []
    missed = 0
    regressions = 0
    clients = sorted({o.client for o in observations})
    for kind in ("pause", "trigger"):
        ordered = sorted((c for c in changes if c.kind == kind), key=lambda c: c.started)
        for index, change in enumerate(ordered):
            window_end = ordered[index + 1].started if index + 1 < len(ordered) else float("inf")
            for client in clients:
                seen = sorted(
                    (
                        o
                        for o in observations
                        if o.client == client and o.kind == kind and o.received >= change.done and o.sent < window_end
                    ),
                    key=lambda o: o.received,
                )
                fresh = next((o for o in seen if _reflects(change, o.value)), None)
                if fresh is None:
                    missed += 1
                    continue
                seconds.append(max(0.0, fresh.received - change.done))
                if kind == "pause":
                    # Only answers wholly between the fresh one and the next change: a request in flight
                    # while the next change commits may already show that one.
                    regressions += sum(
                        1
                        for o in seen
                        if o.sent > fresh.received and o.received < window_end and not _reflects(change, o.value)
                    )
    return Staleness(seconds, missed, regressions)


def count_regressions(observations: Sequence[Observation]) -> int:
    """Run counts that went back, per client (pause flips are judged in :func:`staleness`)."""
    total = 0
    by_client: dict[int, MonotoneWatch] = {}
    for o in sorted((o for o in observations if o.kind == "trigger"), key=lambda o: o.received):
        watch = by_client.setdefault(o.client, MonotoneWatch())
        total += watch.observe(o.sent, o.received, o.value)
    return total

"""Regression and staleness accounting of ``dagcache bench --audit``."""

from __future__ import annotations

import pytest

from proxy.bench.audit import Change, MonotoneWatch, Observation, count_regressions, staleness


def test_a_value_lower_than_one_received_before_the_request_was_sent_is_a_regression():
    watch = MonotoneWatch()
    assert not watch.observe(0.0, 1.0, 5)
    assert not watch.observe(0.5, 1.1, 4)  # sent before 5 arrived: overlapping requests are not ordered
    assert watch.observe(1.2, 1.3, 4)  # sent after 5 arrived
    assert not watch.observe(1.4, 1.5, 6)
    assert watch.regressions == 1


def test_run_counts_going_back_are_counted_per_client():
    obs = [
        Observation(0, "trigger", 0.0, 0.1, 3),
        Observation(0, "trigger", 0.2, 0.3, 2),  # client 0 goes back
        Observation(1, "trigger", 0.0, 0.1, 2),  # client 1 only ever saw 2: fine
        Observation(1, "pause", 0.2, 0.3, 0),
    ]
    assert count_regressions(obs) == 1


def test_staleness_is_from_the_api_answer_to_the_first_fresh_response_per_client():
    changes = [Change("pause", 10.0, 10.1, 1), Change("pause", 20.0, 20.1, 0)]
    obs = [
        Observation(0, "pause", 10.0, 10.15, 0),  # still old
        Observation(0, "pause", 10.2, 10.4, 1),  # fresh: 0.3 s after 10.1
        Observation(1, "pause", 10.1, 10.2, 1),  # fresh: 0.1 s
        Observation(0, "pause", 20.1, 20.2, 0),  # second change, fresh: 0.1 s
    ]
    result = staleness(changes, obs)
    assert sorted(result.seconds) == pytest.approx([0.1, 0.1, 0.3])
    assert result.missed == 1  # client 1 never saw the second change
    assert result.regressions == 0


def test_old_pause_state_after_the_new_one_was_seen_is_a_regression():
    changes = [Change("pause", 10.0, 10.1, 1)]
    obs = [
        Observation(0, "pause", 10.2, 10.3, 1),
        Observation(0, "pause", 10.4, 10.5, 0),  # went back
        Observation(0, "pause", 10.25, 10.6, 0),  # sent before the fresh one arrived: not ordered
    ]
    assert staleness(changes, obs).regressions == 1


def test_a_trigger_is_seen_once_the_count_reaches_it():
    changes = [Change("trigger", 1.0, 1.2, 5)]
    obs = [Observation(0, "trigger", 1.2, 1.3, 4), Observation(0, "trigger", 1.3, 1.5, 6)]
    result = staleness(changes, obs)
    assert result.seconds == pytest.approx([0.3])
    assert result.missed == 0


def test_an_answer_that_may_show_the_next_change_is_not_a_regression():
    changes = [Change("pause", 10.0, 10.1, 1), Change("pause", 11.0, 11.1, 0)]
    obs = [
        Observation(0, "pause", 10.2, 10.3, 1),
        Observation(0, "pause", 10.9, 11.2, 0),  # in flight while the second change committed
    ]
    assert staleness(changes, obs).regressions == 0

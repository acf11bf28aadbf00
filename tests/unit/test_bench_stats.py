"""Percentiles and paired ratios of ``dagcache bench``."""

from __future__ import annotations

import pytest

from proxy.bench.stats import Latency, median_ratio, paired_ratios, percentile, rate


def test_percentile_interpolates_between_closest_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile([10.0, 0.0, 5.0], 50) == 5.0  # unsorted input


def test_p99_of_a_hundred_values_is_near_the_top():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_no_values_give_none_and_bad_q_is_refused():
    assert percentile([], 50) is None
    assert Latency.of([]) == Latency(None, None, None)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)


def test_latency_is_in_milliseconds():
    latency = Latency.of([0.010, 0.020, 0.030])
    assert latency.p50 == pytest.approx(20.0)


def test_ratios_pair_rounds_and_skip_unusable_pairs():
    assert paired_ratios([10.0, 20.0, None, 0.0], [20.0, 20.0, 5.0, 3.0]) == [2.0, 1.0]
    assert median_ratio([10.0, 10.0, 10.0], [10.0, 30.0, 20.0]) == 2.0
    assert median_ratio([None], [1.0]) is None
    with pytest.raises(ValueError, match="rounds differ"):
        paired_ratios([1.0], [1.0, 2.0])


def test_rate_of_an_empty_interval_is_none():
    assert rate(10, 2.0) == 5.0
    assert rate(10, 0.0) is None

"""Latency percentiles and paired ratios (pure)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (numpy's default).

    ``None`` for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles in milliseconds."""

    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ms = [s * 1000.0 for s in seconds]
        return cls(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99))


def paired_ratios(baseline: Sequence[float | None], candidate: Sequence[float | None]) -> list[float]:
    """``candidate[i] / baseline[i]`` for the rounds measured in the same interleaved pair.

    Pairs with a missing value or a zero baseline are skipped: a ratio is only meaningful for two
    figures measured side by side, which is what cancels machine drift."""
    if len(baseline) != len(candidate):
        raise ValueError(f"rounds differ: {len(baseline)} baseline vs {len(candidate)} candidate")
    return [c / b for b, c in zip(baseline, candidate, strict=True) if b is not None and c is not None and b != 0]


def median_ratio(baseline: Sequence[float | None], candidate: Sequence[float | None]) -> float | None:
    """The median of :func:`paired_ratios`; ``None`` when no pair is usable."""
    ratios = paired_ratios(baseline, candidate)
    return statistics.median(ratios) if ratios else None


def rate(count: float, seconds: float) -> float | None:
    """``count`` per second, ``None`` for an empty interval."""
    return count / seconds if seconds > 0 else None

"""proxy.otel: Prometheus families as OpenTelemetry metrics (no I/O: the export itself is tested against a real
OTLP/HTTP receiver in tests/functional/test_otel_functional.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Metric, Sum
from prometheus_client import CollectorRegistry, Metric as PromMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from proxy.metrics import Telemetry
from proxy.otel import otlp_metrics, resource, unit_of

START, NOW = 1_000 * 10**9, 2_000 * 10**9


def _by_name(metrics: list[Metric]) -> dict[str, Metric]:
    return {metric.name: metric for metric in metrics}


def _points(metric: Metric) -> dict[tuple[tuple[str, object], ...], Any]:
    assert isinstance(metric.data, Sum | Gauge | Histogram)
    return {tuple(sorted((p.attributes or {}).items())): p for p in metric.data.data_points}


def test_a_request_mix_as_otel_metrics():
    telemetry = Telemetry()
    for took in (0.0004, 0.0004, 0.003):
        telemetry.request("api.dag", "HIT", 200, took, body_bytes=100)
    telemetry.request("api.dag", "MISS", 200, 0.2)
    telemetry.sample()
    now = time.time_ns()
    metrics = _by_name(otlp_metrics(telemetry.registry.collect(), start_ns=START, now_ns=now))

    requests = metrics["dagcache_requests_total"]
    assert isinstance(requests.data, Sum)
    assert requests.data.is_monotonic and requests.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    hit = _points(requests)[(("outcome", "HIT"), ("route", "api.dag"), ("status", "200"))]
    assert hit.value == 3
    assert START < hit.start_time_unix_nano <= hit.time_unix_nano == now  # _created
    assert requests.description == "Client requests by route, cache outcome and status" and requests.unit == ""

    seconds = metrics["dagcache_request_seconds"]
    assert isinstance(seconds.data, Histogram) and seconds.unit == "s"
    point = _points(seconds)[(("outcome", "HIT"), ("route", "api.dag"))]
    assert point.count == 3 and point.sum == pytest.approx(0.0038)
    assert point.explicit_bounds[:3] == [0.0005, 0.001, 0.0025]
    assert point.bucket_counts[:4] == [2, 0, 0, 1]  # per bucket, not cumulative
    assert sum(point.bucket_counts) == 3
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1

    assert metrics["dagcache_cache_served_bytes_total"].unit == "By"
    up = metrics["dagcache_process_up"]
    assert isinstance(up.data, Gauge) and [p.value for p in up.data.data_points] == [1]
    assert "dagcache_requests_created" not in metrics and "dagcache_request_seconds_bucket" not in metrics


class _Fixed:
    def __init__(self, families: list[PromMetric]) -> None:
        self._families = families

    def collect(self) -> Iterable[PromMetric]:
        return self._families


def test_series_without_created_start_when_the_exporter_did():
    """With --workers N prometheus-client reports no ``_created`` samples."""
    counter = CounterMetricFamily("dagcache_redis_errors", "Redis errors", labels=["op"])
    counter.add_metric(["get"], 4)
    histogram = HistogramMetricFamily("dagcache_redis_seconds", "Redis", labels=["op"])
    histogram.add_metric(["get"], [("0.001", 2), ("0.01", 5), ("+Inf", 6)], 0.03)
    gauge = GaugeMetricFamily("dagcache_process_up", "up", labels=["pid"])
    gauge.add_metric(["41"], 1)
    gauge.add_metric(["42"], 1)
    empty = CounterMetricFamily("dagcache_shadow", "shadow", labels=["would"])
    registry = CollectorRegistry()
    registry.register(_Fixed([counter, histogram, gauge, empty]))
    metrics = _by_name(otlp_metrics(registry.collect(), start_ns=START, now_ns=NOW))
    assert set(metrics) == {"dagcache_redis_errors_total", "dagcache_redis_seconds", "dagcache_process_up"}
    errors = _points(metrics["dagcache_redis_errors_total"])[(("op", "get"),)]
    assert (errors.value, errors.start_time_unix_nano, errors.time_unix_nano) == (4, START, NOW)
    point = _points(metrics["dagcache_redis_seconds"])[(("op", "get"),)]
    assert point.explicit_bounds == [0.001, 0.01] and point.bucket_counts == [2, 3, 1]
    assert point.count == 6 and point.start_time_unix_nano == START
    assert len(_points(metrics["dagcache_process_up"])) == 2


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("dagcache_request_seconds", "s"),
        ("dagcache_version_poll_seconds_total", "s"),
        ("dagcache_l1_bytes", "By"),
        ("dagcache_cache_served_bytes_total", "By"),
        ("dagcache_requests_total", ""),
    ],
)
def test_unit_from_the_name(name: str, unit: str):
    assert unit_of(name) == unit


def test_resource_defaults_and_otel_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    attributes = resource().attributes
    assert attributes["service.name"] == "dagcache" and attributes["service.version"]
    assert attributes["service.instance.id"] != resource().attributes["service.instance.id"]  # one per run
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dagcache-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,deployment.environment=prod")
    attributes = resource().attributes
    assert attributes["service.name"] == "dagcache-eu"
    assert attributes["service.instance.id"] == "pod-7" and attributes["deployment.environment"] == "prod"

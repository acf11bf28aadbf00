"""Optional OpenTelemetry metrics export (``[metrics] otlp_endpoint``, the ``otel`` extra): OTLP/HTTP protobuf.

Every ``otlp_interval`` seconds the admin listener reads the same registry as ``/metrics`` (with ``--workers N``:
every worker, aggregated) and hands it to the OpenTelemetry SDK's ``OTLPMetricExporter`` (in a thread: it
blocks). The Prometheus metrics are converted as the OpenTelemetry spec's Prometheus compatibility rules say:

* names as on ``/metrics`` (``dagcache_requests_total``, ``dagcache_request_seconds``), help text as the
  description, unit ``s`` or ``By`` from the name's suffix; labels become attributes;
* counters become cumulative monotonic sums, gauges gauges, histograms cumulative explicit-bucket histograms
  (no min/max: Prometheus keeps none);
* start time: the series' ``_created`` sample (one process), else the moment the exporter started (with
  ``--workers N`` prometheus-client keeps no ``_created``).

The resource is ``service.name`` = ``dagcache`` (``OTEL_SERVICE_NAME`` wins), ``service.version``,
``service.instance.id`` (a UUID per run, unless ``OTEL_RESOURCE_ATTRIBUTES`` sets one) and ``host.name``, plus
whatever ``OTEL_RESOURCE_ATTRIBUTES`` adds. Headers come from ``otlp_headers`` or, when that is empty, from the
exporter's own ``OTEL_EXPORTER_OTLP_METRICS_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS``; TLS files and
compression from the exporter's ``OTEL_EXPORTER_OTLP_*`` variables.

A collector that is down costs a warning when the export starts failing (with the exporter's own reason) and
an info line when it works again, not a line per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import cast

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, Metric as PromMetric

from proxy import __version__
from proxy.config import redact_url
from proxy.tasks import spawn

log = logging.getLogger("proxy.otel")

#: Where the exporter logs (its ``__name__``); quieted while an export failure goes on (see :class:`_Streak`).
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.metric_exporter"
_FINAL_PUSH_WAIT = 3.0  # seconds a final push at shutdown may take before its retries are cut short
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_UNSET = cast(float, None)  # HistogramDataPoint.sum/min/max: None leaves the optional OTLP field out
Labels = tuple[tuple[str, str], ...]


def unit_of(name: str) -> str:
    """The UCUM unit the metric's name ends with (``_seconds`` → ``s``, ``_bytes`` → ``By``), else ``""``."""
    base = name.removesuffix("_total")
    if base.endswith("_seconds"):
        return "s"
    if base.endswith("_bytes"):
        return "By"
    return ""


@dataclass
class _Series:
    value: float = 0.0
    created: float | None = None
    count: float | None = None
    sum: float | None = None
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)


def _series(family: PromMetric) -> dict[Labels, _Series]:
    """The family's samples grouped by label set (``le`` aside), in the order they come."""
    out: dict[Labels, _Series] = {}
    for sample in family.samples:
        labels = tuple((k, v) for k, v in sample.labels.items() if k != "le")
        series = out.setdefault(labels, _Series())
        suffix = sample.name[len(family.name) :]
        if suffix == "_created":
            series.created = float(sample.value)
        elif suffix == "_count":
            series.count = float(sample.value)
        elif suffix == "_sum":
            series.sum = float(sample.value)
        elif suffix == "_bucket":
            series.buckets.append((float(sample.labels["le"]), float(sample.value)))
        else:  # the value itself ("" for a gauge, "_total" for a counter)
            series.value = float(sample.value)
    return out


def _start(series: _Series, default: int) -> int:
    return int(series.created * 1e9) if series.created is not None else default


def _histogram_point(labels: Labels, series: _Series, start: int, now: int) -> HistogramDataPoint | None:
    buckets = sorted(series.buckets)
    if not buckets:
        return None
    bounds = [le for le, _ in buckets if le != float("inf")]
    counts: list[int] = []
    below = 0.0
    for _, cumulative in buckets:
        counts.append(round(cumulative - below))
        below = cumulative
    if buckets[-1][0] != float("inf"):
        counts.append(0)
    return HistogramDataPoint(
        attributes=dict(labels),
        start_time_unix_nano=start,
        time_unix_nano=now,
        count=round(series.count if series.count is not None else buckets[-1][1]),
        sum=series.sum if series.sum is not None else _UNSET,
        bucket_counts=counts,
        explicit_bounds=bounds,
        min=_UNSET,
        max=_UNSET,
    )


def otlp_metrics(families: Iterable[PromMetric], *, start_ns: int, now_ns: int) -> list[Metric]:
    """The OpenTelemetry SDK's view of Prometheus ``families`` (counters, gauges, histograms; others are skipped).

    ``start_ns``: the start time of a cumulative series that has no ``_created`` sample.
    """
    metrics: list[Metric] = []
    for family in families:
        grouped = _series(family)
        data: Sum | Gauge | Histogram
        if family.type == "counter":
            name = family.name + "_total"
            points = [
                NumberDataPoint(dict(labels), _start(s, start_ns), now_ns, s.value) for labels, s in grouped.items()
            ]
            data = Sum(points, _CUMULATIVE, is_monotonic=True)
        elif family.type == "gauge":
            name = family.name
            data = Gauge([NumberDataPoint(dict(labels), 0, now_ns, s.value) for labels, s in grouped.items()])
        elif family.type == "histogram":
            name = family.name
            found = (_histogram_point(labels, s, _start(s, start_ns), now_ns) for labels, s in grouped.items())
            data = Histogram([point for point in found if point is not None], _CUMULATIVE)
        else:
            continue
        if grouped:
            metrics.append(Metric(name, family.documentation, unit_of(name), data))
    return metrics


def resource() -> Resource:
    """dagcache's resource attributes, merged under ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``."""
    from_env = OTELResourceDetector().detect().attributes
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or str(from_env.get("service.name", "dagcache")),
            "service.version": __version__,
            "service.instance.id": str(from_env.get("service.instance.id", uuid.uuid4())),
            "host.name": str(from_env.get("host.name", socket.gethostname())),
        }
    )


class _Streak(logging.Filter):
    """Lets the exporter's log records through only for the first failing push of a streak."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True

    def filter(self, record: logging.LogRecord) -> bool:
        return self.open


class OtlpPusher:
    """Pushes the registry to one OTLP/HTTP endpoint; never raises. :meth:`push` blocks: run it in a thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
    ) -> None:
        self._registry = registry
        self._endpoint = endpoint
        self._exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout)
        self._resource = resource()
        self._scope = InstrumentationScope("dagcache", __version__)
        self._start_ns = time.time_ns()
        self._lock = threading.Lock()  # one export at a time (the final push may overlap a periodic one)
        self._streak = _Streak()
        self.failing = False

    def data(self) -> MetricsData:
        """What the next push sends (read from the registry now)."""
        metrics = otlp_metrics(self._registry.collect(), start_ns=self._start_ns, now_ns=time.time_ns())
        return MetricsData([ResourceMetrics(self._resource, [ScopeMetrics(self._scope, metrics, "")], "")])

    def push(self) -> bool:
        """Export once; ``True`` when the endpoint accepted it."""
        with self._lock:
            self._streak.open = not self.failing
            try:
                ok = self._exporter.export(self.data()) is MetricExportResult.SUCCESS
            except Exception as exc:  # a registry read racing a starting worker, an encoding bug: next time
                log.debug("reading or exporting the metrics failed: %s", exc)
                ok = False
            if not ok and not self.failing:
                log.warning(
                    "OTLP metrics export to %s failed (the exporter's line says why); "
                    "retrying every push, quiet until it works again",
                    redact_url(self._endpoint),
                )
            elif ok and self.failing:
                log.info("OTLP metrics export to %s works again", redact_url(self._endpoint))
            self.failing = not ok
            return ok

    def attach(self) -> None:
        logging.getLogger(EXPORTER_LOGGER).addFilter(self._streak)

    def close(self) -> None:
        """Stop the exporter (cuts short the retries of a push still running) and detach the log filter."""
        self._exporter.shutdown()
        logging.getLogger(EXPORTER_LOGGER).removeFilter(self._streak)


async def run_pusher(pusher: OtlpPusher, interval: float) -> AsyncIterator[None]:
    """For a ``cleanup_ctx``: push every ``interval`` seconds, and once more at shutdown."""
    pusher.attach()

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(pusher.push)

    task = spawn(loop(), name="otlp-push")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        final = spawn(asyncio.to_thread(pusher.push), name="otlp-final-push")
        await asyncio.wait([final], timeout=_FINAL_PUSH_WAIT)
        pusher.close()
        await final  # with the exporter shut down it ends after the request in flight, if any

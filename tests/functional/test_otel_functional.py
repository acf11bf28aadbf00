"""OpenTelemetry export against a real OTLP/HTTP receiver: a small aiohttp server on loopback that decodes what
the admin listener pushes with the opentelemetry-proto classes (what an OTel collector's otlp receiver does)."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from proxy.config import OTEL_MISSING
from tests.conftest import REPO, UpstreamServer, dagcache_cmd
from tests.functional.observability import Stack, airflow_db, bearer, scrape, until
from tests.servers import free_port

pytestmark = pytest.mark.functional

DAG = "/api/v2/dags/dag_a"
TASKS = "/api/v2/dags/dag_a/tasks"
IDENTITY = {"Accept-Encoding": "identity"}


class Receiver:
    """Accepts ``POST /v1/metrics`` (OTLP/HTTP, protobuf) and keeps every decoded export."""

    def __init__(self) -> None:
        self.exports: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.refused = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.status != 200:
            self.refused += 1
            return web.Response(status=self.status)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        try:
            export = ExportMetricsServiceRequest.FromString(await request.read())
        except DecodeError:
            return web.Response(status=400)
        self.exports.append(export)
        self.headers.append(dict(request.headers))
        body = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def metrics(self, export: int = -1) -> dict[str, Metric]:
        found: dict[str, Metric] = {}
        for resource_metrics in self.exports[export].resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found

    def resource(self, export: int = -1) -> dict[str, str]:
        return _attributes(self.exports[export].resource_metrics[0].resource.attributes)


def _attributes(pairs: Any) -> dict[str, str]:
    return {pair.key: pair.value.string_value for pair in pairs if isinstance(pair, KeyValue)}


def _table(metric: Metric, *labels: str) -> dict[tuple[str, ...], float]:
    """``{(label values...): value}`` of a sum or gauge, zero rows dropped."""
    points = metric.sum.data_points if metric.HasField("sum") else metric.gauge.data_points
    rows: dict[tuple[str, ...], float] = {}
    for point in points:
        value = point.as_double if point.HasField("as_double") else float(point.as_int)
        if value:
            attributes = _attributes(point.attributes)
            rows[tuple(attributes[label] for label in labels)] = value
    return rows


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    received = Receiver()
    app = web.Application()
    app.router.add_post("/v1/metrics", received.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    received.url = f"http://127.0.0.1:{port}/v1/metrics"
    yield received
    await runner.cleanup()


@pytest.fixture
async def stacks() -> AsyncIterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        await stack.aclose()


async def _get(client: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    async with client.get(url, headers={**bearer(), **IDENTITY, **headers}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Cache", ""), resp.headers.get("ETag", "")


async def test_collector_receives_the_request_mix(
    receiver: Receiver, stacks: list[Stack], upstream: UpstreamServer, redis_url: str, tmp_path: Path
) -> None:
    """A known mix through a real proxy; the exporter's push at shutdown carries every count (the interval is an
    hour, so this is the only push)."""
    stack = Stack()
    stacks.append(stack)
    await stack.start(
        upstream={"url": upstream.url},
        database={"url": airflow_db(tmp_path, "dag_a")},
        redis={"url": redis_url, "key_prefix": f"otel{os.getpid()}"},
        versions={"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0},
        metrics={"otlp_endpoint": receiver.url, "otlp_interval": 3600, "otlp_headers": "Authorization=Bearer%20t0ken"},
    )
    async with aiohttp.ClientSession() as client:
        assert (await _get(client, stack.base + DAG))[1] == "MISS"
        status, cache, etag = await _get(client, stack.base + DAG)
        assert (status, cache) == (200, "HIT")
        assert (await _get(client, stack.base + DAG))[1] == "HIT"
        assert (await _get(client, stack.base + DAG, **{"If-None-Match": etag}))[0] == 304
        assert (await _get(client, stack.base + TASKS))[1] == "MISS"
        assert (await _get(client, stack.base + "/status/404"))[0] == 404

        async def all_counted() -> bool:  # and the version state copied into the gauges (once a second)
            samples = await scrape(client, stack.admin)
            return samples.total("dagcache_requests_total") == 6 and samples.value("dagcache_version_dags") == 1

        await until(all_counted)
    assert receiver.exports == []
    await stack.aclose()
    stacks.remove(stack)

    assert len(receiver.exports) == 1
    assert receiver.headers[0]["Authorization"] == "Bearer t0ken"
    resource = receiver.resource()
    assert resource["service.name"] == "dagcache" and resource["service.instance.id"]
    metrics = receiver.metrics()
    requests = metrics["dagcache_requests_total"]
    assert requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert _table(requests, "route", "outcome", "status") == {
        ("api.dag", "MISS", "200"): 1,
        ("api.dag", "HIT", "200"): 2,
        ("api.dag", "304", "304"): 1,
        ("api.dag.tasks", "MISS", "200"): 1,
        ("other", "BYPASS", "404"): 1,
    }
    assert _table(metrics["dagcache_upstream_requests_total"], "route", "status") == {
        ("api.dag", "200"): 1,
        ("api.dag.tasks", "200"): 1,
        ("other", "404"): 1,
    }
    histogram = metrics["dagcache_request_seconds"]
    assert histogram.unit == "s"
    hits = [p for p in histogram.histogram.data_points if _attributes(p.attributes)["outcome"] == "HIT"]
    assert [p.count for p in hits] == [2] and sum(hits[0].bucket_counts) == 2
    assert len(hits[0].bucket_counts) == len(hits[0].explicit_bounds) + 1
    assert _table(metrics["dagcache_process_up"]) == {(): 1}
    assert _table(metrics["dagcache_version_dags"]) == {(): 1}


async def test_pushes_every_interval_and_logs_a_collector_outage_once(
    receiver: Receiver, stacks: list[Stack], upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver.status = 503  # the collector is down at first
    stack = Stack()
    stacks.append(stack)
    await stack.start(upstream={"url": upstream.url}, metrics={"otlp_endpoint": receiver.url, "otlp_interval": 1})
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.get(stack.base + DAG) as resp:
                assert resp.status == 200

        async def refused_twice() -> bool:
            return receiver.refused >= 2

        await until(refused_twice)
        receiver.status = 200

        async def counted() -> bool:
            return bool(receiver.exports) and _table(
                receiver.metrics()["dagcache_requests_total"], "route", "outcome"
            ) == {("api.dag", "BYPASS"): 3}

        await until(counted)
    failed = [r for r in caplog.records if r.name == "proxy.otel" and "failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    assert any(r.name == "proxy.otel" and "works again" in r.getMessage() for r in caplog.records)
    exporter_lines = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert exporter_lines, "the first failure's reason (the exporter's own line) is kept"
    assert len(exporter_lines) <= 2, [r.getMessage() for r in exporter_lines]  # not one per failed push


@pytest.mark.parametrize("command", ["serve", "check"])
def test_without_the_otel_extra_startup_stops_with_one_line(tmp_path: Path, command: str) -> None:
    shadow = tmp_path / "shadow" / "opentelemetry"  # a package that hides the installed opentelemetry
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    config = tmp_path / "config.toml"
    config.write_text(
        f"[server]\nport = {free_port()}\n[admin]\nport = {free_port()}\n"
        '[metrics]\notlp_endpoint = "http://127.0.0.1:4318/v1/metrics"\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(REPO)])}
    proc = subprocess.run(
        dagcache_cmd(command, "--config", str(config)), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"dagcache: {OTEL_MISSING}\n"
    assert "pip install 'dagcache[otel]'" in proc.stderr

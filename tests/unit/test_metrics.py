"""proxy.metrics (labels, recording, sampling) and proxy.status (readiness, the status summary, the page)."""

from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path

import pytest

from cache import CachedResponse, MemoryCacheStore, size
from proxy.admin import collect_families
from proxy.airflow.routes3 import TABLE
from proxy.metrics import OTHER, PASSTHROUGH, Telemetry, TimedStore, multiprocess_registry, outcome_of, route_label
from proxy.status import Samples, quantile, readiness, render_html, summarize, versions_readiness


def samples_of(telemetry: Telemetry) -> Samples:
    return Samples.of(telemetry.registry.collect())


def entry(key: str, size: int = 1000) -> CachedResponse:
    return CachedResponse(200, (("content-type", "application/json"),), b"x" * size, None, None, '"e"', 0.0, key)


class TestLabels:
    @pytest.mark.parametrize(
        ("method", "target", "label"),
        [
            ("GET", "/api/v2/dags/example?limit=5", "api.dag"),
            ("HEAD", "/api/v2/dags/example/tasks", "api.dag.tasks"),
            ("GET", "/api/v2/dags/another_dag_id/tasks", "api.dag.tasks"),  # the template, never the DAG id
            ("GET", "/no/such/view", OTHER),
            ("GET", "/api/v2/dags/%ff", OTHER),  # not UTF-8: rejected before routing
            ("POST", "/api/v2/dags/example", PASSTHROUGH),
            ("PATCH", "/execution/task-instances/1/state", PASSTHROUGH),
        ],
    )
    def test_route_label(self, method: str, target: str, label: str) -> None:
        assert route_label(method, target, "", TABLE) == label

    def test_route_label_under_a_base_path(self) -> None:
        assert route_label("GET", "/airflow/api/v2/dags/x", "/airflow", TABLE) == "api.dag"
        assert route_label("GET", "/airflow/api/v2/dags/x%20y?limit=1", "/airflow/", TABLE) == "api.dag"
        assert route_label("GET", "/airflowx/api/v2/dags/x", "/airflow", TABLE) == OTHER
        assert route_label("GET", "/api/v2/dags/x", "/airflow", TABLE) == OTHER

    def test_route_label_agrees_with_the_decoding_of_requests(self) -> None:
        assert route_label("GET", "/api/v2/dags/a%2Fb/tasks", "", TABLE) == OTHER  # an encoded slash passes
        assert route_label("GET", "/api/v2/dags/./tasks", "", TABLE) == OTHER  # a dot segment passes

    @pytest.mark.parametrize(
        ("status", "x_cache", "outcome"),
        [
            (200, "HIT", "HIT"),
            (304, "HIT", "304"),
            (200, "MISS", "MISS"),
            (200, "STALE", "STALE"),
            (304, "BYPASS", "BYPASS"),  # the upstream's own 304 on a pass-through
            (200, None, "BYPASS"),  # pass-through mode: no X-Cache at all
            (502, "SOMETHING-NEW", "BYPASS"),  # closed set: an unknown value never becomes a label
        ],
    )
    def test_outcome(self, status: int, x_cache: str | None, outcome: str) -> None:
        assert outcome_of(status, x_cache) == outcome


class TestQuantile:
    def test_no_observations(self) -> None:
        assert quantile(0.5, []) is None
        assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None

    def test_interpolates_within_the_bucket(self) -> None:
        buckets = [(0.1, 0.0), (0.2, 10.0), (math.inf, 10.0)]
        assert quantile(0.5, buckets) == pytest.approx(0.15)
        assert quantile(1.0, buckets) == pytest.approx(0.2)

    def test_a_rank_in_the_inf_bucket_is_the_largest_bound(self) -> None:
        assert quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


class TestReadiness:
    def test_versions(self) -> None:
        assert versions_readiness(None, 100.0, 10.0) == (False, "no version map yet")
        assert versions_readiness(0.0, 100.0, 10.0)[0] is False
        assert versions_readiness(95.0, 100.0, 10.0) == (True, "versions fresh: polled 5.0 s ago")
        ok, detail = versions_readiness(80.0, 100.0, 10.0)
        assert not ok and detail == "versions stale: polled 20.0 s ago (versions.max_version_age = 10 s)"

    def test_needs_the_upstream_and_fresh_versions(self) -> None:
        telemetry = Telemetry()
        telemetry.polled_at.set(95.0)
        fresh = samples_of(telemetry)
        assert readiness(True, "up", pass_through=None, samples=fresh, now=100.0, max_age=10.0)[0]
        assert not readiness(False, "down", pass_through=None, samples=fresh, now=100.0, max_age=10.0)[0]
        assert readiness(True, "up", pass_through=None, samples=fresh, now=100.0, max_age=10.0)[1]["mode"] == "cache"
        # Stale versions: still serving (every view passes through), declared; not ready only when required.
        ok, body = readiness(True, "up", pass_through=None, samples=fresh, now=200.0, max_age=10.0)
        assert ok and body["mode"] == "pass-through" and str(body["versions"]).startswith("versions stale")
        ok, body = readiness(
            True, "up", pass_through=None, samples=fresh, now=200.0, max_age=10.0, require_versions=True
        )
        assert not ok and body["mode"] == "pass-through" and body["status"] == "not ready"

    def test_pass_through_mode_is_declared_and_needs_no_versions(self) -> None:
        ok, body = readiness(
            True, "up", pass_through="pass-through mode: no [database] url", samples=Samples({}), now=0, max_age=1
        )
        assert ok and body["mode"] == "pass-through" and "no [database] url" in str(body["versions"])


class TestRecording:
    def test_requests_upstream_and_served_bytes(self) -> None:
        telemetry = Telemetry()
        telemetry.request("api.dag", "MISS", 200, 0.050)
        telemetry.request("api.dag", "HIT", 200, 0.001, body_bytes=300)
        telemetry.request("api.dag", "HIT", 200, 0.001, body_bytes=300)
        telemetry.request("api.dag", "304", 304, 0.0005, body_bytes=0)
        telemetry.request(PASSTHROUGH, "BYPASS", 201, 0.2, body_bytes=999)  # not from the cache: not counted
        telemetry.upstream("api.dag", 200, 0.049)
        telemetry.upstream(PASSTHROUGH, None, 5.0)
        samples = samples_of(telemetry)
        assert samples.total("dagcache_requests_total", route="api.dag") == 4
        assert samples.total("dagcache_cache_served_bytes_total") == 600
        assert samples.total("dagcache_upstream_requests_total", status="error") == 1

    async def test_timed_store_records_gets_and_puts(self) -> None:
        telemetry = Telemetry()
        store = TimedStore(MemoryCacheStore(10_000), telemetry)
        await store.put("k", entry("k"), 60)
        assert await store.get("k") is not None
        assert await store.get("missing") is None
        samples = samples_of(telemetry)
        assert samples.total("dagcache_redis_seconds_count", op="get") == 2
        assert samples.total("dagcache_redis_seconds_count", op="put") == 1

    def test_sample_copies_l1_state_and_counts_evictions_once(self) -> None:
        telemetry = Telemetry()
        l1 = MemoryCacheStore(2 * size(entry("a")) + 10)  # room for two
        telemetry.sources.l1 = l1
        for key in "abc":
            l1.store(key, entry(key), 60)  # the third pushes the first out
        telemetry.sample()
        telemetry.sample()  # nothing changed: no double counting
        samples = samples_of(telemetry)
        assert samples.value("dagcache_l1_entries") == 2
        assert samples.value("dagcache_l1_bytes") == l1.bytes
        assert samples.total("dagcache_l1_evictions_total") == 1
        assert samples.value("dagcache_process_up") == 1


class TestSummary:
    def _telemetry(self) -> Telemetry:
        telemetry = Telemetry()
        for _ in range(3):
            telemetry.request("api.dag", "HIT", 200, 0.001, body_bytes=100)
        telemetry.request("api.dag", "MISS", 200, 0.1)
        telemetry.request("api.dag.tasks", "304", 304, 0.0004)
        telemetry.request(PASSTHROUGH, "BYPASS", 200, 0.02)
        telemetry.polled_at.set(90.0)
        telemetry.generation.set(1234)
        telemetry.dags.set(7)
        return telemetry

    def test_hit_ratio_counts_lookups_only(self) -> None:
        status = summarize(samples_of(self._telemetry()), now=100.0, mode="cache (Redis)")
        assert status.requests == 6
        assert status.hit_ratio == pytest.approx(4 / 5)  # HIT x3 + 304 over HIT + 304 + MISS; BYPASS aside
        assert [(r.route, r.requests) for r in status.routes] == [
            ("api.dag", 4),
            ("api.dag.tasks", 1),
            (PASSTHROUGH, 1),
        ]
        assert status.routes[0].hit_ratio == pytest.approx(0.75)
        assert status.routes[2].hit_ratio is None
        assert status.versions["dags"] == 7 and status.versions["age_seconds"] == 10.0
        assert status.served_from_cache_bytes == 300
        assert status.latency_ms["hit"]["p50"] is not None and status.latency_ms["hit"]["p50"] <= 1.0

    def test_nothing_yet(self) -> None:
        status = summarize(samples_of(Telemetry()), now=100.0, mode="cache (Redis)")
        assert (status.requests, status.hit_ratio, status.routes) == (0, None, [])
        assert status.versions["known"] is False and status.versions["age_seconds"] is None
        assert "no requests yet" in render_html(status)

    def test_page_is_self_contained_refreshing_and_escaped(self) -> None:
        status = summarize(samples_of(self._telemetry()), now=100.0, mode="<script>x</script>", leader="a&b")
        page = render_html(status, refresh=7)
        assert '<meta http-equiv="refresh" content="7">' in page
        assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page
        assert 'id="hit-ratio">80.0%<' in page
        assert '<tr class="route" data-route="api.dag">' in page
        assert "src=" not in page and "<link" not in page  # no external asset


class TestMultiprocessRead:
    async def test_a_value_file_being_created_is_read_again(self, tmp_path: Path) -> None:
        """A worker that starts creates its file empty, then sizes it: a read in between must not fail."""
        creating = tmp_path / "counter_4242.db"
        creating.touch()
        registry = multiprocess_registry(str(tmp_path))

        async def finish_creating() -> None:
            await asyncio.sleep(0.02)
            creating.unlink()

        task = asyncio.ensure_future(finish_creating())
        assert await collect_families(registry) == []
        await task

    async def test_a_file_that_stays_broken_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "counter_4242.db").touch()
        with pytest.raises(struct.error):
            await collect_families(multiprocess_registry(str(tmp_path)), attempts=2)

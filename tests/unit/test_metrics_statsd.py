"""proxy.statsd: StatsD lines from the metric registry (counters as increments, gauges as values)."""

from __future__ import annotations

import pytest

from proxy.config import Settings
from proxy.metrics import Telemetry
from proxy.statsd import Previous, packets, statsd_lines


def lines(telemetry: Telemetry, previous: Previous, *, tags: bool = True) -> set[str]:
    return set(statsd_lines(telemetry.registry.collect(), previous, prefix="dagcache", tags=tags))


def test_counters_are_sent_as_increments_since_the_last_push() -> None:
    telemetry = Telemetry()
    previous: Previous = {}
    telemetry.request("api.dag", "HIT", 200, 0.001)
    telemetry.request("api.dag", "HIT", 200, 0.001)
    first = lines(telemetry, previous)
    assert "dagcache.requests:2|c|#outcome:HIT,route:api_dag,status:200" in first
    assert not any(line.startswith("dagcache.request_seconds") for line in first)  # histograms: Prometheus only
    assert not any("_created" in line for line in first)
    telemetry.request("api.dag", "HIT", 200, 0.001)
    second = lines(telemetry, previous)
    assert "dagcache.requests:1|c|#outcome:HIT,route:api_dag,status:200" in second
    assert not any(line.startswith("dagcache.requests:") for line in lines(telemetry, previous))  # nothing new


def test_gauges_are_values_and_plain_names_carry_the_labels() -> None:
    telemetry = Telemetry()
    telemetry.l1_bytes.set(12345)
    telemetry.upstream("api.dag.tasks", None, 1.0)
    plain = lines(telemetry, {}, tags=False)
    assert "dagcache.l1_bytes:12345|g" in plain
    assert "dagcache.upstream_requests.api_dag_tasks.error:1|c" in plain


def test_packets_stay_under_the_size() -> None:
    datagrams = packets([f"dagcache.metric_{i}:1|c" for i in range(500)], size=200)
    assert all(len(d) <= 200 for d in datagrams)
    assert sum(d.count(b"\n") + 1 for d in datagrams) == 500


@pytest.mark.parametrize("value", ["nope", "host:", ":8125", "host:99999"])
def test_a_bad_address_is_a_config_error(value: str) -> None:
    with pytest.raises(ValueError, match="must be host:port"):
        Settings(metrics={"statsd": value})

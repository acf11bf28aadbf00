"""The pure parts of bench/hit_nginx.py: wrk's output, variants, the same-round ratios."""

from __future__ import annotations

import pytest

from bench.hit_nginx import NGINX, Sample, _merge_toml, parse_variant, parse_wrk, round_order, summarize, table

WRK = """Running 5s test @ http://127.0.0.1:8080/ui/grid/runs/big_dag?limit=10
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   327.41us   85.02us   4.79ms   89.08%
    Req/Sec    97.65k     3.12k  101.92k    80.00%
  Latency Distribution
     50%  312.00us
     75%  340.00us
     90%  390.00us
     99%    1.02ms
  485912 requests in 5.00s, 5.93GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  97181.80
Transfer/sec:      1.19GB
"""


def test_parse_wrk_reads_counts_percentiles_and_errors():
    got = parse_wrk(WRK)
    assert got.requests == 485912
    assert got.seconds == 5.0
    assert got.p50_ms == pytest.approx(0.312)
    assert got.p99_ms == pytest.approx(1.02)
    assert got.non_2xx == 4
    assert got.socket_errors == 3


def test_parse_wrk_refuses_other_output():
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_parse_variant_groups_settings_by_section():
    name, toml = parse_variant("lane:server.fast_lane=true,cache.l1_max_bytes=1000,server.keepalive_timeout=5")
    assert name == "dagcache lane"
    assert toml == "[server]\nfast_lane = true\nkeepalive_timeout = 5\n[cache]\nl1_max_bytes = 1000\n"


@pytest.mark.parametrize(
    "bad", ["lane", "nginx:server.x=1", ":server.x=1", "a b:server.x=1", "lane:x=1", "lane:server.x="]
)
def test_parse_variant_refuses_malformed(bad: str):
    with pytest.raises(ValueError):
        parse_variant(bad)


def test_merge_toml_sets_keys_in_sections_of_the_same_name():
    base = '[server]\nport = 1\n[log]\nlevel = "warning"\naccess_log = false\n'
    merged = _merge_toml(base, '[server]\nhit_lane = false\n[log]\nlevel = "info"\n[cache]\nttl = 5\n')
    assert merged == (
        '[server]\nport = 1\nhit_lane = false\n[log]\nlevel = "info"\naccess_log = false\n[cache]\nttl = 5\n'
    )


def test_round_order_rotates_so_each_target_leads_in_turn():
    assert [round_order(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def _sample(round_: int, target: str, rps: float, statements: int = 0, cpu: float = 1.0) -> Sample:
    return Sample(round_, "v", target, rps, 1.0, 2.0, int(rps), 0, cpu, 1.0, 0.5, 0.5, statements)


def test_summarize_ratios_are_taken_within_each_round():
    samples = [
        _sample(0, NGINX, 100_000),
        _sample(0, "dagcache", 50_000, statements=10),
        _sample(1, NGINX, 50_000, cpu=0.5),  # a noisy round: both got half a core
        _sample(1, "dagcache", 30_000, cpu=0.5),
        _sample(2, NGINX, 100_000),
        _sample(2, "dagcache", 40_000),
    ]
    nginx, dagcache = summarize(samples)
    assert nginx.ratio is None and nginx.rps == 100_000
    assert dagcache.ratios == [0.5, 0.6, 0.4]
    assert dagcache.ratio == pytest.approx(0.5)
    assert dagcache.ratio_min == pytest.approx(0.4)
    assert dagcache.ratio_max == pytest.approx(0.6)
    assert dagcache.statements_per_request == pytest.approx(10 / 120_000)
    assert dagcache.per_cpu_second == 50_000 and dagcache.cpu_ratio == pytest.approx(0.5)
    assert dagcache.quiet_ratio == pytest.approx(0.45)  # rounds 0 and 2
    assert dagcache.quiet_rounds == 2
    text = table([nginx, dagcache])
    assert "| v | dagcache | 40,000 |" in text and "**0.50** (0.40-0.60) | 0.50 | 0.45 (2) |" in text

"""Result rows, markdown table and JSON of ``dagcache bench``."""

from __future__ import annotations

import json

import pytest

from proxy.bench.report import Phase, client_regressions, columns, fmt, markdown, ratios, rows, summarize, to_json


def phase(
    target: str,
    users: int,
    round_: int,
    *,
    requests: int,
    seconds: float = 10.0,
    db: int | None = 100,
    latencies: list[float] | None = None,
    hits: int = 0,
) -> Phase:
    return Phase(
        target,
        users,
        round_,
        seconds=seconds,
        requests=requests,
        hits=hits,
        db_statements=db,
        latencies=latencies if latencies is not None else [0.01] * requests,
        cpu_seconds=2.0,
    )


def test_rounds_are_pooled_into_one_row():
    row = summarize(
        [
            phase("dagcache", 10, 0, requests=100, hits=90, db=10, latencies=[0.001] * 99 + [0.1]),
            phase("dagcache", 10, 1, requests=300, hits=290, db=30, latencies=[0.002] * 300),
        ]
    )
    assert row.requests == 400 and row.rounds == 2 and row.seconds == 20.0
    assert row.rps == 20.0
    assert row.hit_ratio == pytest.approx(380 / 400)
    assert row.db_per_s == 2.0 and row.db_per_request == pytest.approx(0.1)
    assert row.cpu_percent == pytest.approx(20.0)
    assert row.p50_ms == pytest.approx(2.0)


def test_db_figures_are_missing_unless_every_round_has_them():
    row = summarize([phase("direct", 10, 0, requests=10), phase("direct", 10, 1, requests=10, db=None)])
    assert row.db_per_s is None and row.db_per_request is None
    assert row.regressions is None and row.stale_p99_ms is None


def test_ratios_pair_the_same_round_and_user_count():
    phases = [
        phase("direct", 10, 0, requests=100, db=1000),
        phase("dagcache", 10, 0, requests=300, db=10),
        phase("dagcache", 10, 1, requests=500, db=10),
        phase("direct", 10, 1, requests=100, db=500),
        phase("direct", 50, 0, requests=100),
    ]
    (ratio,) = ratios(phases)
    assert (ratio.candidate, ratio.baseline, ratio.users) == ("dagcache", "direct", 10)
    assert ratio.rps == pytest.approx(4.0)  # median of 3x and 5x
    assert ratio.db_per_s == pytest.approx(75.0)  # median of 100x and 50x


def test_markdown_has_one_row_per_target_and_user_count_with_every_column():
    phases = [phase(t, u, 0, requests=10) for u in (2, 5) for t in ("direct", "dagcache")]
    text = markdown(rows(phases), ratios(phases))
    lines = text.splitlines()
    assert lines[0].startswith("| target | users | req/s | p50 ms | p95 ms | p99 ms | errors | hit ratio")
    table = [line for line in lines[2:6]]
    assert [line.split("|")[1:3] for line in table] == [
        [" direct ", " 2 "],
        [" dagcache ", " 2 "],
        [" direct ", " 5 "],
        [" dagcache ", " 5 "],
    ]
    assert all(line.count("|") == len(columns(audit=False)) + 1 for line in table)
    assert "dagcache vs direct" in text
    assert "regressions" in markdown(rows(phases), audit=True) and "regressions" not in text


def test_cells_are_readable():
    assert fmt(None) == "–"
    assert fmt(3) == "3"
    assert fmt(0.0) == "0"
    assert fmt(0.123456) == "0.12"
    assert fmt(12.345) == "12.3"
    assert fmt(1234.5) == "1234"


def test_json_keeps_the_raw_figures():
    phases = [phase("direct", 2, 0, requests=3, latencies=[0.001, 0.002, 0.003])]
    document = json.loads(to_json(phases, {"airflow": "3.3.2"}, audit=False))
    assert document["meta"] == {"airflow": "3.3.2"}
    assert document["phases"][0]["latencies_ms"] == [1.0, 2.0, 3.0]
    assert document["phases"][0]["p50_ms"] == pytest.approx(2.0)
    assert document["rows"][0]["rps"] == pytest.approx(0.3)
    assert "staleness" not in document["phases"][0]


def test_regressions_per_audit_client_add_up_over_rounds_and_show_side_by_side():
    phases = [phase(t, 2, r, requests=10) for r in (0, 1) for t in ("direct", "dagcache")]
    phases[0].audit_clients = {"watcher 0": 5, "watcher 1": 7}
    phases[1].audit_clients = {"watcher 0": 0, "watcher 1": 0}
    phases[2].audit_clients = {"watcher 0": 1, "watcher 1": 0}
    phases[3].audit_clients = {"watcher 0": 0, "watcher 1": 0}
    clients = client_regressions(phases)
    assert [(c.target, c.users, c.clients) for c in clients] == [
        ("direct", 2, {"watcher 0": 6, "watcher 1": 7}),
        ("dagcache", 2, {"watcher 0": 0, "watcher 1": 0}),
    ]
    text = markdown(rows(phases), audit=True, clients=clients)
    assert "| direct | 2 | watcher 0: 6, watcher 1: 7 |" in text
    assert "| dagcache | 2 | watcher 0: 0, watcher 1: 0 |" in text
    assert "per audit client" not in markdown(rows(phases), audit=True)  # Airflow 3: not counted per client
    assert json.loads(to_json(phases, {}, audit=True))["audit_clients"][0]["clients"] == {
        "watcher 0": 6,
        "watcher 1": 7,
    }

"""The Airflow 3 UI request mix that ``dagcache bench`` simulates."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from proxy.bench import mix


def test_pending_states_follow_the_ui():
    for state in ("running", "queued", "scheduled", "deferred", "up_for_retry", "up_for_reschedule", "restarting"):
        assert mix.is_pending(state)
    assert mix.is_pending(None) and mix.is_pending("")
    for state in ("success", "failed", "skipped", "upstream_failed", "removed"):
        assert not mix.is_pending(state)


def test_opening_a_dag_loads_header_grid_and_graph():
    paths = mix.dag_open("big_dag")
    assert "/api/v2/dags/big_dag/details" in paths
    assert "/ui/grid/runs/big_dag?limit=10&order_by=-run_after" in paths
    assert any(p.startswith("/ui/grid/structure/big_dag?") for p in paths)
    assert any(p.startswith("/ui/structure/structure_data?dag_id=big_dag") for p in paths)
    assert "/ui/dags/big_dag/latest_run" in paths
    assert len(paths) == len(set(paths))


def test_ti_summaries_is_one_request_for_all_shown_runs():
    path = mix.ti_summaries("d", ["manual__2024-01-01T00:00:00+00:00", "r2"])
    assert path is not None
    query = parse_qs(urlsplit(path).query)
    assert urlsplit(path).path == "/ui/grid/ti_summaries/d"
    assert query["run_ids"] == ["manual__2024-01-01T00:00:00+00:00", "r2"]
    assert mix.ti_summaries("d", []) is None


def test_an_idle_dag_page_polls_latest_run_and_checks_pending_runs_ten_times_slower():
    ticks = [mix.poll("d", ["r1"], pending=False, tick=t) for t in range(1, 21)]
    assert all(paths[0] == "/ui/dags/d/latest_run" for paths in ticks)
    checks = [t for t, paths in enumerate(ticks, start=1) if any("state=running" in p for p in paths)]
    assert checks == [10, 20]
    assert not any(mix.is_grid_runs(p) for paths in ticks for p in paths)


def test_a_dag_page_with_a_pending_run_refreshes_the_grid_every_interval():
    paths = mix.poll("d", ["r1", "r2"], pending=True, tick=1)
    assert any(mix.is_grid_runs(p) for p in paths)
    assert any(p.startswith("/ui/grid/structure/d?") for p in paths)
    assert any(p.startswith("/ui/grid/ti_summaries/d?run_ids=r1&run_ids=r2") for p in paths)
    assert "/ui/dags?dag_ids=d&dag_runs_limit=1" in paths
    assert not any(mix.is_latest_run(p) for p in paths)


def test_dag_ids_are_quoted_in_paths():
    assert mix.dag_open("a b/c")[0] == "/api/v2/dags/a%20b%2Fc/details"


def test_grid_state_and_latest_run_parsing():
    runs = [{"run_id": "r2", "state": "running"}, {"run_id": "r1", "state": "success"}, "junk"]
    assert mix.grid_state(runs) == (["r2", "r1"], True)
    assert mix.grid_state([{"run_id": "r1", "state": "success"}]) == (["r1"], False)
    assert mix.grid_state({"detail": "x"}) == ([], False)
    assert mix.latest_run_id({"run_id": "r9"}) == "r9"
    assert mix.latest_run_id(None) == ""
    assert mix.dag_ids_of({"dags": [{"dag_id": "a"}, {"x": 1}], "total_entries": 2}) == ["a"]


def test_half_the_users_open_the_big_dag_and_the_rest_spread_over_small_ones():
    dags = ["small_000", "small_001", "small_002", "big_dag"]
    picks = [mix.choose_dag(dags, user, 0) for user in range(8)]
    assert picks.count("big_dag") == 4
    assert set(picks) - {"big_dag"} == {"small_000", "small_001", "small_002"}
    assert mix.choose_dag(["a", "b"], 0, 0) == "a"  # no heavy DAG: round robin
    assert mix.choose_dag([], 0, 0) is None
    assert mix.choose_dag(["big_dag"], 1, 0) == "big_dag"


def test_users_and_durations_parse_or_say_why_not():
    assert mix.parse_users("10,50,200") == [10, 50, 200]
    assert mix.parse_duration("30s") == 30.0
    assert mix.parse_duration("2m") == 120.0
    assert mix.parse_duration("500ms") == 0.5
    assert mix.parse_duration("7") == 7.0
    for bad in ("", "0", "x,1", "-5"):
        with pytest.raises(ValueError, match="positive integers"):
            mix.parse_users(bad)
    for bad in ("", "0s", "5 parsecs", "-1s"):
        with pytest.raises(ValueError, match="duration"):
            mix.parse_duration(bad)


def test_path_kinds():
    assert mix.is_details("/api/v2/dags/big_dag/details")
    assert not mix.is_details("/api/v2/dags/big_dag")
    assert mix.is_latest_run("/ui/dags/d/latest_run")
    assert not mix.is_latest_run("/ui/dags?dag_ids=d")
    assert mix.is_grid_runs("/ui/grid/runs/d?limit=10")

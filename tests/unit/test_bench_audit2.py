"""Definition flapping accounting of ``dagcache bench --audit`` on Airflow 2."""

from __future__ import annotations

import pytest

from proxy.bench.audit2 import (
    FETCH_INTERVAL,
    DefinitionChange,
    Seen,
    audit_dag_source,
    next_pair,
    quiet_after,
    regressions,
    staleness,
    valid_dag_id,
    variant_of,
    written_by_bench,
)

GRAPH, TASKS = "/object/graph_data", "/api/v1/dags/d/tasks"


def test_each_change_writes_a_dag_whose_views_name_it():
    source = audit_dag_source("dagcache_bench_audit", 7)
    compile(source, "dagcache_bench_audit.py", "exec")  # valid Python (Airflow itself is not needed here)
    assert "dag_id='dagcache_bench_audit'" in source
    assert 'task_id="bench_change_7"' in source
    assert written_by_bench(source)
    assert not written_by_bench("from airflow import DAG\n")
    assert variant_of(source.encode()) == 7


def test_the_marker_is_read_from_any_definition_view():
    graph = b'{"nodes": {"children": [{"id": "start"}, {"id": "bench_change_12", "label": "bench_change_12"}]}}'
    assert variant_of(graph) == 12
    assert variant_of(b'{"tasks": [{"task_id": "bench_change_3"}, {"task_id": "bench_change_30"}]}') == 30
    assert variant_of(b"<html>Sign In</html>") is None
    assert variant_of(b'{"task_id": "bench_change_0"}') == 0


def test_only_plain_dag_ids_become_files():
    assert valid_dag_id("dagcache_bench_audit") and valid_dag_id("team-a.audit_2")
    for bad in ("", "../x", "a/b", "a b", ".hidden", "x" * 201):
        assert not valid_dag_id(bad)
        with pytest.raises(ValueError, match="DAG id"):
            audit_dag_source(bad, 1)


def test_a_view_that_goes_back_to_an_older_change_is_a_regression_per_client():
    seen = [
        Seen(0, GRAPH, 0.0, 0.1, 2),
        Seen(0, GRAPH, 0.2, 0.3, 1),  # went back: a stale worker
        Seen(0, GRAPH, 0.4, 0.5, 2),
        Seen(0, GRAPH, 0.6, 0.7, 1),  # and again
        Seen(0, TASKS, 0.8, 0.9, 1),  # another view: judged on its own, it never showed 2
        Seen(1, GRAPH, 0.0, 0.1, 1),
        Seen(1, GRAPH, 0.05, 0.3, 2),
        Seen(1, GRAPH, 0.2, 0.4, 1),  # sent before 2 arrived: overlapping requests are not ordered
    ]
    assert regressions(seen) == {0: 2, 1: 0}
    assert regressions([]) == {}


def test_staleness_is_measured_for_the_watched_change_of_each_pair():
    changes = [
        DefinitionChange(1, 10.0, 10.5, primer=True),
        DefinitionChange(2, 11.5, 12.0),
        DefinitionChange(3, 40.0, 40.5, primer=True),
        DefinitionChange(4, 41.5, 42.0),
    ]
    seen = [
        Seen(0, GRAPH, 12.0, 12.1, 2),  # 0.1 s after change 2
        Seen(0, TASKS, 12.1, 12.2, 0),
        Seen(0, TASKS, 12.2, 24.0, 2),  # 12 s after: a cache holding the old definition
        Seen(0, GRAPH, 42.1, 42.2, 4),
        Seen(0, TASKS, 42.3, 42.4, 3),  # the primer's definition is not change 4
    ]
    result = staleness(changes, seen)
    assert sorted(result.seconds) == pytest.approx([0.1, 0.2, 12.0])
    assert result.missed == 1  # (change 4, client 0, tasks)
    assert result.regressions == 0


def test_an_answer_sent_after_the_next_pair_began_does_not_count_for_the_last_change():
    changes = [DefinitionChange(2, 1.0, 2.0), DefinitionChange(3, 20.0, 21.0, primer=True)]
    seen = [Seen(0, GRAPH, 1.5, 2.5, 1), Seen(0, GRAPH, 20.5, 22.0, 3)]
    assert staleness(changes, seen).missed == 1


def test_pairs_wait_until_every_worker_reloads_on_its_next_request_and_fit_the_phase():
    assert quiet_after(100.0, watch=15.0) == 100.0 + 2 * FETCH_INTERVAL + 1.0  # primed workers hold B for 20 s
    assert quiet_after(100.0, watch=30.0) == 130.0
    assert next_pair(now=5.0, quiet_until=12.0, deadline=60.0, watch=20.0) == 12.0
    assert next_pair(now=15.0, quiet_until=12.0, deadline=60.0, watch=20.0) == 15.0
    assert next_pair(now=5.0, quiet_until=40.0, deadline=60.0, watch=20.0) is None  # B could not be watched

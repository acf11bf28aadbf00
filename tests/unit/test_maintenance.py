"""Pure parts of ``dagcache purge`` / ``dagcache warm``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from cache.keys import CacheKey
from proxy.maintenance import WarmReport, entry_pattern, warm_targets


def _redis_key(dag: str, prefix: str = "dagcache") -> str:
    key = CacheKey(prefix, "api.dag.tasks", dag, (("definition", 7),), "c:abc", "d1")
    return f"{prefix}:{key.render()}"


def test_purge_patterns_match_exactly_one_dags_entries():
    for dag in ("etl", "etl_daily", "weird*[dag]?", "ünïcode dag"):
        pattern = entry_pattern("dagcache", dag)
        assert fnmatchcase(_redis_key(dag), pattern), (dag, pattern)
        assert fnmatchcase(_redis_key(dag) + ":lock", pattern)
        for other in ("etl", "etl_daily", "etl2", "weird", "x"):
            if other != dag:
                assert not fnmatchcase(_redis_key(other), pattern), (dag, other)
    everything = entry_pattern("dagcache", None)
    assert fnmatchcase(_redis_key("etl"), everything)
    assert not fnmatchcase(_redis_key("etl", prefix="other"), everything)
    assert not fnmatchcase("dagcache:versions", everything)  # the version map is not an entry


def test_warm_targets_are_every_definition_view_of_every_dag_escaped():
    paths = warm_targets(["a", "b/c"])
    assert len(paths) == 8
    assert "/api/v2/dags/b%2Fc/tasks" in paths
    assert "/ui/structure/structure_data?dag_id=a&external_dependencies=false" in paths


def test_warm_report_line():
    report = WarmReport(total=4)
    report.outcomes.update({"MISS": 2, "HIT": 1})
    assert report.line() == "3/4 views (HIT 1, MISS 2)"

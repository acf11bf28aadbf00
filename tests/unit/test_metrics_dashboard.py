"""deploy/grafana/dagcache.json queries only metrics dagcache exposes, with labels they carry."""

from __future__ import annotations

import json
import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Telemetry
from tests.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dagcache.json"


def exposed() -> dict[str, set[str]]:
    """Sample name -> label names, as ``/metrics`` shows them once every labelled metric has a value."""
    telemetry = Telemetry()
    telemetry.request("api.dag", "HIT", 200, 0.001, body_bytes=1)
    telemetry.upstream("api.dag", 200, 0.01)
    telemetry.redis("get", 0.001, False)
    telemetry.fill_seconds.labels("shared").observe(0.1)
    telemetry.shadow.labels("HIT").inc()
    telemetry.polls.labels("ok").inc()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_query_uses_exposed_metrics_and_labels() -> None:
    names = exposed()
    exprs = expressions()
    assert len(exprs) >= 15
    for expr in exprs:
        for name, selector in re.findall(r"(dagcache_[a-z0-9_]+)(?:\{([^}]*)\})?", expr):
            assert name in names, (name, expr)
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in names[name] | {"job", "instance"}, (label, name, expr)
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            for label in (part.strip() for part in grouping.split(",")):
                assert label in {"le", "job", "instance"} or any(label in labels for labels in names.values()), expr


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        pos = panel["gridPos"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, panel["title"]
        assert pos["x"] + pos["w"] <= 24
        cells |= mine

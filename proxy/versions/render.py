"""``dagcache versions`` output: a table for people, JSON for scripts. Pure."""

from __future__ import annotations

import json
import time

from proxy.versions.model import VersionMap


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def schema_label(schema: str) -> str:
    major, _, revision = schema.partition(":")
    return f"Airflow {major} (alembic {revision})"


def as_json(version_map: VersionMap, *, source: str, leader: str | None, now: float) -> str:
    return json.dumps(
        {
            "source": source,
            "schema": version_map.schema,
            "generation": version_map.generation,
            "global_version": version_map.global_version,
            "polled_at": _iso(version_map.polled_at),
            "age_seconds": round(max(0.0, now - version_map.polled_at), 3),
            "leader": leader,
            "revoked_tokens": len(version_map.revoked),
            "dags": {
                dag_id: {"definition": v.definition, "state": v.state, "changed_at": _iso(v.changed_at)}
                for dag_id, v in sorted(version_map.dags.items())
            },
        },
        indent=2,
    )


def as_table(version_map: VersionMap, *, source: str, leader: str | None, now: float) -> str:
    age = max(0.0, now - version_map.polled_at)
    lines = [
        f"{schema_label(version_map.schema)}; {len(version_map.dags)} DAGs; from {source}",
        f"generation {version_map.generation}, global version {version_map.global_version}, "
        f"polled {_iso(version_map.polled_at)} ({age:.1f} s ago), leader {leader or '-'}, "
        f"{len(version_map.revoked)} revoked tokens",
        "",
    ]
    width = max([len("DAG ID"), *(len(d) for d in version_map.dags)])
    lines.append(f"{'DAG ID':<{width}}  {'DEFINITION':>14}  {'STATE':>14}  LAST CHANGE")
    for dag_id, v in sorted(version_map.dags.items()):
        lines.append(f"{dag_id:<{width}}  {v.definition:>14}  {v.state:>14}  {_iso(v.changed_at)}")
    return "\n".join(lines)

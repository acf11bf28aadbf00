"""How the version map is laid out in Redis and on the change channel. Pure functions.

Redis keys share one hash tag (``{dagcache}``) so that multi-key scripts work on Redis Cluster:

* ``{p}:versions`` (hash): ``_g`` generation, ``_global`` global version, ``_schema``, ``_polled_at``
  (ms), ``_epoch``, and one field ``d:<dag_id>`` = ``"<definition>:<state>:<changed_at ms>"`` per DAG;
* ``{p}:fingerprints`` (hash, leader bookkeeping): ``<dag_id>`` = JSON ``[definition, state, listing]``,
  ``_global`` = the global fingerprint;
* ``{p}:revoked`` (hash): revoked token ``jti`` -> expiry (epoch seconds);
* ``{p}:leader`` (string with TTL): the lease holder's token ``<instance>:<fence>``; ``{p}:fence`` counter;
* channel ``{p}:changes``: JSON messages, ``{"t": "delta", ...}`` for a change and ``{"t": "beat", ...}``
  after every poll without one (freshness, and a way to notice a missed change).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.airflow.snapshot import DagFingerprint
from proxy.versions.model import DagVersion, Delta, LeaderState, VersionMap

DAG_PREFIX = "d:"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def _base(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def versions(self) -> str:
        return f"{self._base}:versions"

    @property
    def fingerprints(self) -> str:
        return f"{self._base}:fingerprints"

    @property
    def revoked(self) -> str:
        return f"{self._base}:revoked"

    @property
    def leader(self) -> str:
        return f"{self._base}:leader"

    @property
    def fence(self) -> str:
        return f"{self._base}:fence"

    @property
    def channel(self) -> str:
        return f"{self._base}:changes"


def encode_version(version: DagVersion) -> str:
    return f"{version.definition}:{version.state}:{int(version.changed_at * 1000)}"


def decode_version(raw: str) -> DagVersion:
    definition, state, changed = raw.split(":")
    return DagVersion(int(definition), int(state), int(changed) / 1000)


def meta_fields(version_map: VersionMap) -> dict[str, str]:
    return {
        "_g": str(version_map.generation),
        "_global": str(version_map.global_version),
        "_schema": version_map.schema,
        "_polled_at": str(int(version_map.polled_at * 1000)),
        "_epoch": str(version_map.epoch),
    }


def decode_map(fields: Mapping[str, str], revoked: Mapping[str, str]) -> VersionMap | None:
    """The map stored in Redis, or ``None`` when there is none (or it is unreadable: treated as absent)."""
    try:
        dags = {k[len(DAG_PREFIX) :]: decode_version(v) for k, v in fields.items() if k.startswith(DAG_PREFIX)}
        return VersionMap(
            generation=int(fields["_g"]),
            schema=fields["_schema"],
            global_version=int(fields["_global"]),
            dags=dags,
            polled_at=int(fields["_polled_at"]) / 1000,
            epoch=int(fields.get("_epoch", "0")),
            revoked={jti: float(exp) for jti, exp in revoked.items()},
        )
    except (KeyError, ValueError):
        return None


def encode_fingerprint(fingerprint: DagFingerprint) -> str:
    return json.dumps([fingerprint.definition, fingerprint.state, fingerprint.listing])


def decode_leader_state(version_map: VersionMap, fingerprints: Mapping[str, str]) -> LeaderState:
    """The leader state to continue from after a failover (fingerprints that fail to parse are dropped,
    which only makes the next poll bump those DAGs)."""
    parsed: dict[str, DagFingerprint] = {}
    for dag_id, raw in fingerprints.items():
        if dag_id == "_global":
            continue
        try:
            definition, state, listing = json.loads(raw)
            parsed[dag_id] = DagFingerprint(str(definition), str(state), str(listing))
        except (ValueError, TypeError):
            continue
    return LeaderState(version_map, parsed, fingerprints.get("_global", ""))


@dataclass(frozen=True, slots=True)
class Beat:
    generation: int
    polled_at: float
    db_error: str | None


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    generation: int
    global_version: int
    schema: str
    polled_at: float
    delta: Delta


def encode_delta(version_map: VersionMap, delta: Delta) -> str:
    return json.dumps(
        {
            "t": "delta",
            "g": version_map.generation,
            "pg": delta.previous_generation,
            "global": version_map.global_version,
            "schema": version_map.schema,
            "polled_at": version_map.polled_at,
            "set": {k: encode_version(v) for k, v in delta.changed.items()},
            "del": list(delta.removed),
            "radd": dict(delta.revoked_added),
            "rdel": list(delta.revoked_removed),
            "gc": delta.global_changed,
            "sc": delta.schema_changed,
        },
        separators=(",", ":"),
    )


def encode_beat(version_map: VersionMap, db_error: str | None) -> str:
    return json.dumps({"t": "beat", "g": version_map.generation, "polled_at": version_map.polled_at, "err": db_error})


def decode_message(raw: bytes | str) -> Beat | DeltaMessage | None:
    """A channel message, or ``None`` for anything unreadable (the reader then resynchronises)."""
    try:
        data = json.loads(raw)
        if data["t"] == "beat":
            return Beat(int(data["g"]), float(data["polled_at"]), data.get("err"))
        if data["t"] == "delta":
            delta = Delta(
                previous_generation=int(data["pg"]),
                changed={k: decode_version(v) for k, v in data["set"].items()},
                removed=tuple(data["del"]),
                revoked_added={k: float(v) for k, v in data["radd"].items()},
                revoked_removed=tuple(data["rdel"]),
                global_changed=bool(data["gc"]),
                schema_changed=bool(data["sc"]),
            )
            return DeltaMessage(
                int(data["g"]), int(data["global"]), str(data["schema"]), float(data["polled_at"]), delta
            )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None

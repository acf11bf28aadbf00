"""What one poll of Airflow's metadata DB yields: plain, comparable fingerprints. Pure data, no I/O.

A fingerprint is an opaque digest: two polls that return equal fingerprints for a DAG saw the same
definition (or state, or DAG-list fields) of that DAG. :mod:`proxy.versions` turns changes of fingerprints
into monotonically increasing version numbers; nothing else compares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """The detected metadata schema."""

    major: int  # 2 or 3
    revision: str  # alembic_version.version_num


@dataclass(frozen=True, slots=True)
class DagFingerprint:
    """Digests of one DAG as seen by one poll."""

    #: Latest serialized definition: Airflow 3 latest dag_version id + serialized_dag.dag_hash + dag_code
    #: source hash (an in-place rewrite changes dag_hash, a comment-only edit the source hash);
    #: Airflow 2 serialized_dag.dag_hash + dag_code last_updated.
    definition: str
    #: Runs and task instances, as far as the incremental queries see them (see README, "State versions").
    state: str
    #: The DAG's row in the DAG list: paused, stale, owners, tags, next run, import errors, ...
    listing: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one poll read."""

    schema: SchemaInfo
    dags: Mapping[str, DagFingerprint]
    #: Digest of what the DAG list depends on beyond the DAG rows (import errors, the set of DAG ids).
    global_extra: str
    #: Airflow 3 revoked token ids -> their expiry (epoch seconds); empty for Airflow 2.
    revoked: Mapping[str, float] = field(default_factory=dict)
    #: SQL statements this poll executed (for the statements/s metric).
    statements: int = 0

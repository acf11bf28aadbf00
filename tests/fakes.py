"""The one fake of the suite: a scripted snapshot source standing in for the metadata DB where a test
needs exact control over what each poll returns (leader election and distribution tests). The real SQL
source is tested against real Airflow schemas in tests/integration."""

from __future__ import annotations

from proxy.airflow.snapshot import DagFingerprint, SchemaInfo, Snapshot
from proxy.errors import VersionLookupError


class ScriptedDb:
    def __init__(self, dags: dict[str, tuple[str, str, str]], revision: str = "r1") -> None:
        self.dags = dict(dags)
        self.revision = revision
        self.fail = False
        self.polls = 0

    def set(self, dag_id: str, *, definition: str | None = None, state: str | None = None,
            listing: str | None = None) -> None:
        d, s, listing_ = self.dags[dag_id]
        self.dags[dag_id] = (definition or d, state or s, listing or listing_)

    def snapshot_with(self, dags: dict[str, tuple[str, str, str]]) -> Snapshot:
        return Snapshot(SchemaInfo(3, self.revision), {k: DagFingerprint(*v) for k, v in dags.items()}, "", {}, 3)

    async def poll(self) -> Snapshot:
        self.polls += 1
        if self.fail:
            raise VersionLookupError("metadata DB unreachable: ConnectionRefusedError (scripted)")
        return self.snapshot_with(self.dags)

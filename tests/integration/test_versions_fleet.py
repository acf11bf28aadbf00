"""Several real processes, one real Airflow 3 metadata DB, one Redis: one leader, failover, freshness,
and no process ever seeing a version go down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.airflow.harness import AirflowInstance
from tests.conftest import REPO
from tests.versions_probe import CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


class Probe:
    def __init__(self, db_url: str, redis_url: str, prefix: str, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.versions_probe", db_url, redis_url, prefix, name],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.last: dict[str, object] | None = None
        self.regressions: list[str] = []
        self._seen: dict[str, list[int]] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            data = json.loads(line)
            dags: dict[str, list[int]] = data["dags"]
            for dag_id, pair in dags.items():
                before = self._seen.get(dag_id)
                if before is not None and (pair[0] < before[0] or pair[1] < before[1]):
                    self.regressions.append(f"{self.name} {dag_id}: {before} -> {pair}")
                self._seen[dag_id] = pair
            self.last = data

    def version(self, dag_id: str) -> list[int] | None:
        return self._seen.get(dag_id)

    @property
    def leader(self) -> bool:
        return bool(self.last and self.last["leader"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def advanced(probes: list[Probe], before: list[list[int] | None], dag_id: str, index: int) -> bool:
    """Whether every probe shows ``dag_id``'s definition (index 0) or state (1) above ``before``."""
    for probe, old in zip(probes, before, strict=True):
        now = probe.version(dag_id)
        if now is None or old is None or now[index] <= old[index]:
            return False
    return True


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def airflow_schema(airflow_admin_db_url: str, tmp_path: Path) -> Iterator[AirflowInstance]:
    instance = AirflowInstance(
        3, airflow_admin_db_url, tmp_path / "airflow", serve=False, n_small=3, big_tasks=40,
        min_serialized_dag_update_interval=0,
    )
    with instance:
        yield instance


def test_fleet_follows_one_leader_and_survives_its_death(airflow_schema: AirflowInstance, redis_url: str):
    af = airflow_schema
    probes = [Probe(af.db_url, redis_url, f"fleet-{os.getpid()}", f"p{i}") for i in range(3)]
    try:
        wait_for(lambda: all(p.version("small_000") for p in probes), 30, "every process has a map")
        wait_for(lambda: sum(p.leader for p in probes) == 1, 10, "exactly one leader")

        # A definition change reaches every process within poll_interval + 1 s of the DB commit.
        before = [p.version("small_001") for p in probes]
        af.touch_dag("small_001", 1)
        af.sync_dags("small_001")
        committed = time.monotonic()
        took = wait_for(
            lambda: advanced(probes, before, "small_001", 0),
            CONFIG.poll_interval + 1.0 + 5.0,
            "new definition everywhere",
        )
        assert took <= CONFIG.poll_interval + 1.0, f"definition change took {took:.2f} s after the commit"
        assert time.monotonic() - committed < 10

        # The leader dies without a word; another takes over within the lease TTL.
        leader = next(p for p in probes if p.leader)
        survivors = [p for p in probes if p is not leader]
        leader.proc.send_signal(signal.SIGKILL)
        before_state = [p.version("small_002") for p in survivors]
        af.create_runs("small_002", ["running"])
        took = wait_for(
            lambda: advanced(survivors, before_state, "small_002", 1),
            CONFIG.lease_ttl + CONFIG.poll_interval + 5.0,
            "new run seen by the survivors",
        )
        assert took <= CONFIG.lease_ttl + CONFIG.poll_interval + 1.5
        wait_for(lambda: sum(p.leader for p in survivors) == 1, 5, "one new leader")
    finally:
        for probe in probes:
            probe.stop()
    assert [r for p in probes for r in p.regressions] == []

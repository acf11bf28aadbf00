"""``--audit``: change DAG state through Airflow's own API while load runs, and watch it arrive.

One changer talks to the upstream directly (never through the proxy, so dagcache's read-your-writes
shortcut does not help it): every ``interval`` seconds it alternately flips ``is_paused`` of the audit DAG
(``PATCH /api/v2/dags/{id}``) and triggers a run (``POST /api/v2/dags/{id}/dagRuns``). A few watchers per
target, each on its own connection (so they may land on different proxy worker processes), poll that DAG
and its run count through the target. :mod:`proxy.bench.audit` turns both logs into regressions and
staleness. A change whose call fails or times out (a saturated upstream) is counted as failed, and the
DAG's real state is read again before the next one. :meth:`Auditor.restore` puts ``is_paused`` back and
deletes every run of the audit DAG that was not there before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from proxy.bench import BenchError
from proxy.bench.audit import Change, MonotoneWatch, Observation, count_regressions, staleness
from proxy.bench.report import Phase
from proxy.tasks import spawn


@dataclass(slots=True)
class AuditLog:
    changes: list[Change] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    generations: dict[int, MonotoneWatch] = field(default_factory=dict)
    failed: int = 0  # changes whose API call failed or timed out

    def apply(self, phase: Phase, user_regressions: int) -> None:
        result = staleness(self.changes, self.observations)
        phase.staleness = result.seconds
        phase.stale_missed = result.missed
        phase.audit_failed = self.failed
        phase.regressions = (
            user_regressions
            + result.regressions
            + count_regressions(self.observations)
            + sum(w.regressions for w in self.generations.values())
        )


class Auditor:
    def __init__(self, upstream: str, token: str, dag_id: str, *, interval: float, watchers: int, poll: float) -> None:
        self._upstream = upstream.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self.dag_id = dag_id
        self._dag_path = f"/api/v2/dags/{quote(dag_id, safe='')}"
        self._interval = interval
        self._watchers = watchers
        self._poll = poll
        self._session: aiohttp.ClientSession | None = None
        self._original_paused: bool | None = None
        self._paused = False
        self._runs = 0
        self._initial_runs: set[str] = set()

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self._resync()
        self._original_paused = self._paused
        self._initial_runs = await self._run_ids()

    async def _resync(self) -> None:
        """Read the DAG's real state (after a change whose answer never came, it is unknown)."""
        dag = await self._json("GET", self._dag_path)
        runs = await self._json("GET", self._dag_path + "/dagRuns?limit=1")
        if not isinstance(dag, dict) or not isinstance(runs, dict):
            raise BenchError(f"--audit: cannot read DAG {self.dag_id!r} from the upstream")
        self._paused = bool(dag.get("is_paused"))
        self._runs = int(runs.get("total_entries", 0))

    async def _run_ids(self) -> set[str]:
        listing = await self._json("GET", self._dag_path + "/dagRuns?limit=1000")
        runs = listing.get("dag_runs") if isinstance(listing, dict) else None
        if not isinstance(runs, list):
            raise BenchError(f"--audit: cannot list the runs of {self.dag_id!r}")
        return {str(r["dag_run_id"]) for r in runs if isinstance(r, dict) and "dag_run_id" in r}

    async def _json(self, method: str, path: str, body: object = None) -> object:
        assert self._session is not None
        data = None if body is None else json.dumps(body)
        headers = {**self._auth, **({"Content-Type": "application/json"} if data is not None else {})}
        try:
            async with self._session.request(method, self._upstream + path, data=data, headers=headers) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise BenchError(f"--audit: {method} {path} -> HTTP {resp.status}: {text[:200]}")
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BenchError(f"--audit: {method} {path}: {type(exc).__name__} {exc}".rstrip()) from None

    async def run_phase(self, base_url: str, deadline: float) -> AuditLog:
        """Change and watch until ``deadline`` (loop time); returns the phase's log."""
        log = AuditLog()
        tasks = [
            spawn(self._watch(base_url, client, deadline, log), name=f"audit-watch-{client}")
            for client in range(self._watchers)
        ]
        try:
            await self._change(deadline, log)
        finally:
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return log

    async def _change(self, deadline: float, log: AuditLog) -> None:
        loop = asyncio.get_running_loop()
        step = 0
        await asyncio.sleep(min(self._interval / 2, max(0.0, deadline - loop.time())))
        unsure = False
        while loop.time() + self._interval / 2 < deadline:
            started = time.monotonic()
            try:
                if unsure:  # the last change timed out: it may or may not have happened
                    await self._resync()
                    unsure = False
                if step % 2 == 0:
                    target = not self._paused
                    await self._json("PATCH", self._dag_path, {"is_paused": target})
                    self._paused = target
                    log.changes.append(Change("pause", started, time.monotonic(), int(target)))
                else:
                    await self._json("POST", self._dag_path + "/dagRuns", {"logical_date": None})
                    self._runs += 1
                    log.changes.append(Change("trigger", started, time.monotonic(), self._runs))
            except BenchError:
                log.failed += 1  # e.g. the upstream is saturated; not a change anyone could see
                unsure = True
            step += 1
            await asyncio.sleep(max(0.0, min(self._interval, deadline - loop.time())))

    async def _watch(self, base_url: str, client: int, deadline: float, log: AuditLog) -> None:
        loop = asyncio.get_running_loop()
        base = base_url.rstrip("/")
        watch = log.generations.setdefault(client, MonotoneWatch())
        # Its own session and connection: watchers may land on different proxy worker processes.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            while loop.time() < deadline:
                for kind, path in (("pause", self._dag_path), ("trigger", self._dag_path + "/dagRuns?limit=1")):
                    sent = time.monotonic()
                    try:
                        async with session.get(base + path, headers=self._auth) as resp:
                            payload = await resp.json(content_type=None) if resp.status == 200 else None
                            generation = resp.headers.get("X-Dagcache-Generation")
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        continue
                    received = time.monotonic()
                    if generation is not None and generation.isdigit():
                        watch.observe(sent, received, int(generation))
                    if not isinstance(payload, dict):
                        continue
                    if kind == "pause":
                        value = int(bool(payload.get("is_paused")))
                        log.observations.append(Observation(client, "pause", sent, received, value))
                    else:
                        count = int(payload.get("total_entries", 0))
                        log.observations.append(Observation(client, "trigger", sent, received, count))
                await asyncio.sleep(self._poll)

    async def restore(self) -> list[str]:
        """Undo: ``is_paused`` as found, every run that was not there at :meth:`open` deleted.
        Returns problems (empty when clean)."""
        problems: list[str] = []
        if self._session is None:
            return problems
        try:
            if self._original_paused is not None:
                await self._json("PATCH", self._dag_path, {"is_paused": self._original_paused})
            for run_id in sorted(await self._run_ids() - self._initial_runs):
                try:
                    await self._json("DELETE", f"{self._dag_path}/dagRuns/{quote(run_id, safe='')}")
                except BenchError as exc:
                    problems.append(str(exc))
        except BenchError as exc:
            problems.append(str(exc))
        finally:
            await self._session.close()
            self._session = None
        return problems

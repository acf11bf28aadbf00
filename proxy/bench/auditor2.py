"""``--audit`` on Airflow 2: change a DAG's definition while load runs, and count who saw it go back.

The auditor owns one DAG file, ``<--dags-folder>/<--audit-dag>.py`` (:func:`~proxy.bench.audit2.audit_dag_source`;
it refuses to overwrite a file it did not write, or to take the id of a DAG that exists already), and stores each
version through a :class:`~proxy.bench.sync2.Syncer`. Per phase, after a second, it makes change pairs as in
AIRFLOW2-FACTS.md §1 (:mod:`proxy.bench.audit2`): A; requests straight to the webserver, two at a time on new
connections, until one shows A (so one or two gunicorn workers hold A and will keep it for 10 s); a second later
B. Watchers, each logged in with its own session and polling the DAG's ``graph_data``, ``/api/v1/dags/{id}/tasks``
and ``grid_data`` through the measured target, pause from A until B is stored. :meth:`Auditor2.restore` deletes
the file and the DAG.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

from proxy.bench import BenchError, mix2
from proxy.bench.audit import MonotoneWatch
from proxy.bench.audit2 import (
    FETCH_INTERVAL,
    DefinitionChange,
    Seen,
    audit_dag_source,
    next_pair,
    quiet_after,
    regressions,
    staleness,
    variant_of,
    written_by_bench,
)
from proxy.bench.report import Phase
from proxy.bench.sync2 import Syncer
from proxy.tasks import spawn

PRIME_PATIENCE = FETCH_INTERVAL + 2.0
"""Seconds of priming requests before B is written anyway (a worker holds a DAG for at most FETCH_INTERVAL)."""


@dataclass(slots=True)
class AuditLog2:
    changes: list[DefinitionChange] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    generations: dict[int, MonotoneWatch] = field(default_factory=dict)
    failed: int = 0  # changes whose write or store failed
    unprimed: int = 0  # pairs whose A no priming request showed: not stored, or every worker still held the DAG

    def apply(self, phase: Phase, user_regressions: int) -> None:
        per_client = regressions(self.seen)
        for client, watch in self.generations.items():
            per_client[client] = per_client.get(client, 0) + watch.regressions
        result = staleness(self.changes, self.seen)
        phase.staleness = result.seconds
        phase.stale_missed = result.missed
        phase.audit_failed = self.failed
        phase.audit_unprimed = self.unprimed
        phase.regressions = user_regressions + sum(per_client.values())
        phase.audit_clients = {f"watcher {c}": n for c, n in sorted(per_client.items())}


class Auditor2:
    def __init__(
        self,
        upstream: str,
        cookies: list[str],
        dag_id: str,
        folder: Path,
        syncer: Syncer,
        *,
        interval: float,
        poll: float,
        num_runs: int = mix2.DEFAULT_NUM_RUNS,
    ) -> None:
        if not cookies:
            raise ValueError("at least one watcher")
        self._upstream = upstream.rstrip("/")
        self._cookies = cookies
        self.dag_id = dag_id
        self._path = folder / f"{dag_id}.py"
        self._syncer = syncer
        self._interval = interval
        self._poll = poll
        self._views = (mix2.graph_data(dag_id), mix2.tasks(dag_id), mix2.grid_data(dag_id, num_runs))
        self._variant = 0
        self._quiet_until = 0.0  # loop time: the next pair not before (audit2.quiet_after)
        self._watching = asyncio.Event()
        self._watching.set()
        self._session: aiohttp.ClientSession | None = None
        self._wrote = False

    @property
    def _headers(self) -> dict[str, str]:
        return {"Cookie": self._cookies[0]}

    async def open(self) -> None:
        """Write and store change 0 (or continue after a file an interrupted run left), wait until the webserver
        serves it and let every worker load it."""
        folder = self._path.parent
        if not folder.is_dir():
            raise BenchError(f"--dags-folder {str(folder)!r} is not a directory")
        existing = self._path.read_text() if self._path.exists() else None
        if existing is not None and not written_by_bench(existing):
            raise BenchError(f"{self._path} exists and was not written by dagcache bench: pick another --audit-dag")
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=30)
        )
        if existing is None and await self._status(f"/api/v1/dags/{quote(self.dag_id, safe='')}") == 200:
            raise BenchError(f"the upstream already has a DAG {self.dag_id!r}: pick another --audit-dag")
        leftover = variant_of(existing.encode()) if existing is not None else None  # an interrupted run's file
        self._variant = leftover if leftover is not None else 0
        await self._syncer.start()
        self._write(self._variant)
        await self._syncer.sync(self._path)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while variant_of(await self._fetch(self._upstream + mix2.tasks(self.dag_id))) != self._variant:
            if loop.time() > give_up:
                raise BenchError(
                    f"--audit: the webserver does not serve {self.dag_id!r} 60 s after storing it"
                    f" (is --dags-folder its DAGs folder and does the sync reach its metadata DB?)"
                )
            await asyncio.sleep(0.5)
        await asyncio.gather(*(self._fetch(self._upstream + mix2.tasks(self.dag_id)) for _ in range(8)))
        self._quiet_until = loop.time() + FETCH_INTERVAL

    def _write(self, variant: int) -> None:
        temporary = self._path.with_name(f".{self._path.name}.tmp")  # not *.py: no DAG processor reads it
        temporary.write_text(audit_dag_source(self.dag_id, variant))
        os.replace(temporary, self._path)
        self._wrote = True

    async def _status(self, path: str) -> int:
        assert self._session is not None
        try:
            async with self._session.get(self._upstream + path, headers=self._headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchError(f"--audit: GET {path}: {type(exc).__name__} {exc}".rstrip()) from None

    async def _fetch(self, url: str) -> bytes:
        """A GET on a new connection (gunicorn spreads those over its workers); the body, empty unless 200."""
        connector = aiohttp.TCPConnector(force_close=True)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    cookie_jar=aiohttp.DummyCookieJar(),
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as session,
                session.get(url, headers=self._headers, allow_redirects=False) as resp,
            ):
                body = await resp.read()
                return body if resp.status == 200 else b""
        except (aiohttp.ClientError, TimeoutError):
            return b""

    async def run_phase(self, base_url: str, deadline: float) -> AuditLog2:
        """Change and watch until ``deadline`` (loop time); returns the phase's log."""
        log = AuditLog2()
        tasks = [
            spawn(self._watch(base_url, client, deadline, log), name=f"audit2-watch-{client}")
            for client in range(len(self._cookies))
        ]
        try:
            await self._change(deadline, log)
        finally:
            self._watching.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return log

    async def _change(self, deadline: float, log: AuditLog2) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))  # the watchers' first answers
        while (start := next_pair(loop.time(), self._quiet_until, deadline, self._interval)) is not None:
            await asyncio.sleep(max(0.0, start - loop.time()))
            self._watching.clear()
            try:
                primer = await self._change_once(log, primer=True)
                if primer is not None:
                    if not await self._prime(primer.variant):
                        log.unprimed += 1
                    await asyncio.sleep(1.0)
                await self._change_once(log, primer=False)
            finally:
                self._watching.set()
            self._quiet_until = quiet_after(loop.time(), self._interval)

    async def _change_once(self, log: AuditLog2, *, primer: bool) -> DefinitionChange | None:
        self._variant += 1
        started = time.monotonic()
        try:
            self._write(self._variant)
            await self._syncer.sync(self._path)
        except (BenchError, OSError):
            log.failed += 1
            return None
        change = DefinitionChange(self._variant, started, time.monotonic(), primer)
        log.changes.append(change)
        return change

    async def _prime(self, variant: int) -> bool:
        """Requests straight to the webserver, two at a time on new connections, until one shows ``variant`` (True)
        or :data:`PRIME_PATIENCE` passed (False). A worker that loaded the DAG less than 10 s ago answers with the
        old definition without loading: when workers loaded it late (e.g. when dagcache's convergence window ended
        and its fills reached them), the first to become due loads ``variant`` and the others stay unprimed."""
        loop = asyncio.get_running_loop()
        url = self._upstream + mix2.tasks(self.dag_id)
        give_up = loop.time() + PRIME_PATIENCE
        while True:
            bodies = await asyncio.gather(self._fetch(url), self._fetch(url))
            if any((v := variant_of(b)) is not None and v >= variant for b in bodies):
                return True
            if loop.time() >= give_up:
                return False
            await asyncio.sleep(0.25)

    async def _watch(self, base_url: str, client: int, deadline: float, log: AuditLog2) -> None:
        loop = asyncio.get_running_loop()
        base = base_url.rstrip("/")
        headers = {"Cookie": self._cookies[client]}
        watch = log.generations.setdefault(client, MonotoneWatch())
        turn = client
        # Its own session: with dagcache its keep-alive connection may land on another worker process than the
        # other watcher's; the webserver closes every connection, so there each request may reach another worker.
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            while loop.time() < deadline:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._watching.wait()
                except TimeoutError:
                    return
                view = self._views[turn % len(self._views)]
                turn += 1
                sent = time.monotonic()
                try:
                    async with session.get(base + view, headers=headers, allow_redirects=False) as resp:
                        body = await resp.read()
                        status = resp.status
                        generation = resp.headers.get("X-Dagcache-Generation")
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(self._poll)
                    continue
                received = time.monotonic()
                if generation is not None and generation.isdigit():
                    watch.observe(sent, received, int(generation))
                variant = variant_of(body) if status == 200 else None
                if variant is not None:
                    log.seen.append(Seen(client, view.split("?", 1)[0], sent, received, variant))
                await asyncio.sleep(self._poll)

    async def restore(self) -> list[str]:
        """Delete the DAG file and the DAG, if this auditor wrote them. Returns problems (empty when clean)."""
        problems: list[str] = []
        await self._syncer.aclose()
        if self._wrote:
            try:
                self._path.unlink(missing_ok=True)
            except OSError as exc:
                problems.append(f"cannot delete {self._path}: {exc.strerror}")
        if self._session is None:
            return problems
        if not self._wrote:  # open() refused: the DAG, if any, is not the bench's to delete
            await self._session.close()
            self._session = None
            return problems
        path = f"/api/v1/dags/{quote(self.dag_id, safe='')}"
        try:
            async with self._session.delete(self._upstream + path, headers=self._headers) as resp:
                text = await resp.text()
                if resp.status not in (200, 204, 404):
                    problems.append(f"DELETE {path} -> HTTP {resp.status}: {text[:200]} (delete the DAG by hand)")
        except (aiohttp.ClientError, TimeoutError) as exc:
            problems.append(f"DELETE {path}: {type(exc).__name__} {exc} (delete the DAG by hand)".rstrip())
        finally:
            await self._session.close()
            self._session = None
        return problems

"""Simulated browser users of the Airflow 3 UI (aiohttp): one coroutine per user, :mod:`proxy.bench.mix` paths.

:class:`Browser` (connections, timing, recording) is shared with the Airflow 2 users of :mod:`proxy.bench.users2`.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from proxy.bench import mix
from proxy.bench.audit import MonotoneWatch
from proxy.bench.report import Phase

ACCEPT_ENCODING = "gzip, deflate"
"""What the simulated browsers accept (bodies are read, not decompressed, unless the bench parses them)."""


def decode(body: bytes, encoding: str | None) -> object:
    """The JSON of a (possibly gzip/deflate-encoded) body, or None."""
    try:
        if encoding in ("gzip", "deflate"):
            body = zlib.decompress(body, wbits=47)  # 32 + 15: gzip or zlib header, detected
        return json.loads(body)
    except (ValueError, zlib.error):
        return None


@dataclass(slots=True)
class Recorder:
    """Collects one phase's figures from all users."""

    phase: Phase
    generations: dict[int, MonotoneWatch] = field(default_factory=dict)
    in_flight: int = 0

    def response(
        self, user: int, sent: float, received: float, status: int, headers: aiohttp.typedefs.LooseHeaders
    ) -> None:
        p = self.phase
        p.requests += 1
        key = str(status)
        p.statuses[key] = p.statuses.get(key, 0) + 1
        if status >= 300:  # no view the bench requests redirects, except Airflow 2's to /login/ (a lost session)
            p.errors += 1
        else:
            p.latencies.append(received - sent)
        get = getattr(headers, "get", None)
        if get is None:
            return
        if get("X-Cache") == "HIT":
            p.hits += 1
        generation = get("X-Dagcache-Generation")
        if generation is not None and str(generation).isdigit():
            self.generations.setdefault(user, MonotoneWatch()).observe(sent, received, int(generation))

    def failure(self, exc: BaseException) -> None:
        p = self.phase
        p.requests += 1
        p.errors += 1
        key = f"{type(exc).__name__}"
        p.statuses[key] = p.statuses.get(key, 0) + 1

    @property
    def generation_regressions(self) -> int:
        return sum(w.regressions for w in self.generations.values())


_PARSED = (mix.is_grid_runs, mix.is_latest_run, mix.is_details, lambda p: p.startswith("/ui/dags?dag_runs_limit=14"))


class Browser:
    """One browser tab's connections: at most :data:`~proxy.bench.mix.BROWSER_CONNECTIONS` requests at a time,
    each timed from sending to the last body byte and recorded; ``headers`` carry its credential."""

    def __init__(
        self,
        index: int,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        recorder: Recorder,
    ) -> None:
        self.index = index
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {**headers, "Accept-Encoding": ACCEPT_ENCODING}
        self._recorder = recorder
        self._limit = asyncio.Semaphore(mix.BROWSER_CONNECTIONS)

    def parses(self, path: str) -> bool:
        """Whether the bench needs the JSON of ``path`` (then :meth:`get` returns it)."""
        return False

    async def get(self, path: str) -> object:
        """One request; the parsed JSON when the bench needs it, else None."""
        async with self._limit:
            sent = time.monotonic()
            self._recorder.in_flight += 1
            try:
                async with self._session.get(self._base + path, headers=self._headers, allow_redirects=False) as resp:
                    body = await resp.read()
                    received = time.monotonic()
                    self._recorder.response(self.index, sent, received, resp.status, resp.headers)
                    if resp.status == 200 and self.parses(path):
                        return decode(body, resp.headers.get("Content-Encoding"))
                    return None
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._recorder.failure(exc)
                return None
            finally:
                self._recorder.in_flight -= 1

    async def batch(self, paths: Sequence[str]) -> dict[str, object]:
        """Paths issued together (as React Query does on mount), at most 6 at a time."""
        results = await asyncio.gather(*(self.get(p) for p in paths))
        return dict(zip(paths, results, strict=True))


class User(Browser):
    """One Airflow 3 browser tab: opens the app and the DAG list, then DAGs, and keeps polling like the UI."""

    def __init__(
        self,
        index: int,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        recorder: Recorder,
        *,
        refresh: float = mix.DEFAULT_REFRESH,
        dwell: int = 20,
        heavy: Sequence[str] = mix.HEAVY_DAGS,
    ) -> None:
        super().__init__(index, session, base_url, headers, recorder)
        self._refresh = refresh
        self._dwell = dwell
        self._heavy = heavy

    def parses(self, path: str) -> bool:
        return any(test(path) for test in _PARSED)

    async def run(self, deadline: float, start_delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        if start_delay > 0:
            await asyncio.sleep(start_delay)
        await self.batch(mix.SESSION)
        listing = await self.batch(mix.dag_list())
        dag_ids = next((mix.dag_ids_of(v) for v in listing.values() if v is not None), [])
        visit = 0
        while loop.time() < deadline:
            dag_id = mix.choose_dag(dag_ids, self.index, visit, self._heavy)
            if dag_id is None:
                await asyncio.sleep(min(self._refresh, max(0.0, deadline - loop.time())))
                listing = await self.batch(mix.dag_list())
                dag_ids = next((mix.dag_ids_of(v) for v in listing.values() if v is not None), [])
                continue
            await self._stay_on_dag(dag_id, deadline)
            visit += 1
            if loop.time() < deadline:
                await self.batch(mix.dag_list())

    async def _stay_on_dag(self, dag_id: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        opened = await self.batch(mix.dag_open(dag_id))
        run_ids, pending = self._grid(opened, [], False)
        paused = self._paused(opened, False)
        latest = self._latest(opened, "")
        summaries = mix.ti_summaries(dag_id, run_ids)
        if summaries is not None:
            await self.get(summaries)
        next_tick = loop.time() + self._refresh
        for tick in range(1, self._dwell + 1):
            if next_tick >= deadline:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                return
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            # refetchInterval timers keep their cadence; a tick that falls while the last poll is still
            # in flight is skipped, as React Query skips a refetch of a query that is already fetching.
            next_tick += self._refresh
            # useAutoRefresh: no interval for a paused DAG, whatever its runs
            results = await self.batch(mix.poll(dag_id, run_ids, pending=pending and not paused, tick=tick))
            run_ids, pending = self._grid(results, run_ids, pending)
            newest = self._latest(results, latest)
            if newest != latest and latest_known(results):
                latest = newest
                refreshed = await self.batch(mix.on_new_run(dag_id))
                run_ids, pending = self._grid(refreshed, run_ids, pending)
                paused = self._paused(refreshed, paused)
                summaries = mix.ti_summaries(dag_id, run_ids)
                if summaries is not None:
                    await self.get(summaries)
            while next_tick < loop.time():
                next_tick += self._refresh

    @staticmethod
    def _grid(results: dict[str, object], run_ids: list[str], pending: bool) -> tuple[list[str], bool]:
        for path, payload in results.items():
            if mix.is_grid_runs(path) and payload is not None:
                return mix.grid_state(payload)
        return run_ids, pending

    @staticmethod
    def _paused(results: dict[str, object], current: bool) -> bool:
        for path, payload in results.items():
            if mix.is_details(path) and isinstance(payload, dict):
                return bool(payload.get("is_paused"))
        return current

    @staticmethod
    def _latest(results: dict[str, object], current: str) -> str:
        for path, payload in results.items():
            if mix.is_latest_run(path):
                return mix.latest_run_id(payload) if payload is not None else current
        return current


def latest_known(results: dict[str, object]) -> bool:
    """Whether this batch asked for ``latest_run`` (only then can it have changed)."""
    return any(mix.is_latest_run(p) for p in results)

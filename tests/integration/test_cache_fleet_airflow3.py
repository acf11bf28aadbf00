"""dagcache as a fleet of real processes in front of a real Airflow 3.3: two ``dagcache serve`` replicas with
two worker processes each (four processes sharing one Redis), many clients on fresh connections."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.airflow.harness import AirflowInstance
from tests.conftest import dagcache_cmd
from tests.servers import free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAG = "small_008"
TASKS = f"/api/v2/dags/{DAG}/tasks"
RUNS = f"/ui/grid/runs/{DAG}?limit=50&order_by=-run_after"
POLL_INTERVAL = 0.5


@pytest.fixture
def replicas(airflow3: AirflowInstance, redis_url: str, tmp_path: Path) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    for i in range(2):
        port, admin = free_port(), free_port()
        config = tmp_path / f"replica{i}.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = 2\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n'
            f'[upstream]\nurl = "{airflow3.base_url}"\n'
            f'[database]\nurl = "{airflow3.db_url}"\n'
            f'[redis]\nurl = "{redis_url}"\nkey_prefix = "fleet-{tmp_path.name[-12:]}"\n'
            f"[versions]\npoll_interval = {POLL_INTERVAL}\nlease_ttl = 3.0\nstate_max_age = 0\n"
            '[log]\nlevel = "warning"\naccess_log = false\n'
        )
        with (tmp_path / f"replica{i}.log").open("wb") as log:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(dagcache_cmd("serve", "--config", str(config)), stderr=log, stdout=log))
        bases.append(f"http://127.0.0.1:{port}")
        wait_port(port, timeout=60)
    try:
        yield bases
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _get_json(base: str, path: str, token: str) -> tuple[str, Any]:
    """One request on a fresh connection (so SO_REUSEPORT spreads them over the worker processes)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
        client.get(base + path, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return resp.headers.get("X-Cache", ""), json.loads(await resp.read())


async def test_no_client_goes_back_and_every_process_shows_a_change_within_poll_interval(
    replicas: list[str], airflow3: AirflowInstance
):
    token = airflow3.token("admin")
    for base in replicas:  # every process has its versions before the clock starts
        async with asyncio.timeout(30):
            while (await _get_json(base, TASKS, token))[0] not in ("HIT", "MISS"):
                await asyncio.sleep(0.2)

    regressions: list[str] = []
    answers: list[int] = []
    stop = asyncio.Event()

    async def poller(index: int) -> None:
        best_tasks = best_runs = 0
        turn = index
        while not stop.is_set():
            turn += 1
            base = replicas[turn % 2]
            _, body = await _get_json(base, TASKS, token)
            count = len(body["tasks"])
            if count < best_tasks:
                regressions.append(f"client {index} via {base}: {best_tasks} tasks, then {count}")
            best_tasks = max(best_tasks, count)
            _, runs_body = await _get_json(base, RUNS, token)
            runs = len(runs_body)
            if runs < best_runs:
                regressions.append(f"client {index} via {base}: {best_runs} runs, then {runs}")
            best_runs = max(best_runs, runs)
            answers.append(count)

    pollers = [asyncio.ensure_future(poller(i)) for i in range(8)]
    delays: list[float] = []
    try:
        for variant in (1, 2):
            before = len((await _get_json(replicas[0], TASKS, token))[1]["tasks"])
            airflow3.touch_dag(DAG, variant)
            await asyncio.to_thread(airflow3.sync_dags, DAG)  # returns once the new definition is committed
            committed = time.monotonic()
            for base in replicas:
                # From the first of ten answers in a row on fresh connections (so both worker processes) that
                # show the new definition.
                streak, first_fresh = 0, 0.0
                async with asyncio.timeout(30):
                    while streak < 10:
                        _, body = await _get_json(base, TASKS, token)
                        if len(body["tasks"]) == before:
                            streak = 0
                            continue
                        first_fresh = time.monotonic() if streak == 0 else first_fresh
                        streak += 1
                delays.append(first_fresh - committed)
            await asyncio.to_thread(airflow3.create_runs, DAG, ["success"])
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*pollers)
        airflow3.touch_dag(DAG, 0)
        await asyncio.to_thread(airflow3.sync_dags, DAG)
    assert regressions == []
    assert len(set(answers)) >= 2, "the pollers saw the change"
    # Every process of every replica serves the new definition within poll_interval + 1 s of the commit.
    assert max(delays) <= POLL_INTERVAL + 1.0, delays

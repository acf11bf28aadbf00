"""The access log of a real ``dagcache serve`` (cache mode: Redis and an Airflow-shaped metadata DB): one complete
JSON line per request, written in batches, none lost at SIGTERM while they are still buffered (one process, and
with ``--workers 2``); the hit lane and aiohttp's full path write the same line; no credential in the log."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from tests.conftest import REPO, UpstreamServer
from tests.functional.observability import airflow_db, bearer
from tests.servers import free_port, wait_port

pytestmark = pytest.mark.functional

DAG = "/api/v2/dags/dag_a"
TASKS = "/api/v2/dags/dag_a/tasks"
AUTH = bearer()
TOKEN = AUTH["Authorization"].split()[1]

# `dagcache serve` whose access lines are written only when a batch is full, another line is logged or the
# process stops: whatever a test finds in the log before SIGTERM was flushed by one of those, not by the timer.
NO_TIMER = [
    sys.executable,
    "-c",
    "import proxy.accessbuffer as b; b.FLUSH_INTERVAL = 3600.0; from proxy.cli import main; raise SystemExit(main())",
]


class Serve:
    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, log: Path, copier: threading.Thread | None = None
    ) -> None:
        self.proc, self.base, self.log, self.copier = proc, f"http://127.0.0.1:{port}", log, copier

    def access_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "proxy.access" in line]

    async def stop(self) -> list[dict[str, object]]:
        """SIGTERM; every access line, each parsed (a torn or merged line fails here)."""
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(self.proc.wait, 30) == 0, self.log.read_text()[-3000:]
        if self.copier is not None:
            await asyncio.to_thread(self.copier.join, 10)
        return [json.loads(line) for line in self.access_lines()]


@pytest.fixture
def serve(request: pytest.FixtureRequest, upstream: UpstreamServer, redis_url: str, tmp_path: Path) -> Iterator[Serve]:
    command, workers, pipe = request.param
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = {workers}\nshutdown_grace = 5\n'
        f'[upstream]\nurl = "{upstream.url}"\n[admin]\nenabled = false\n'
        f'[database]\nurl = "{airflow_db(tmp_path, "dag_a")}"\n'
        f'[redis]\nurl = "{redis_url}"\nkey_prefix = "accesslog{secrets.token_hex(4)}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n'
    )
    log = tmp_path / "serve.log"
    copier: threading.Thread | None = None
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "serve", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE if pipe else out,  # a pipe, as a container runtime reads a container's log
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if pipe:
        assert proc.stdout is not None
        copier = threading.Thread(target=_copy, args=(proc.stdout, log))
        copier.start()
    try:
        wait_port(port, 30)
        yield Serve(proc, port, log, copier)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if copier is not None:
            copier.join(10)


def _copy(source: IO[bytes], log: Path) -> None:
    """What ``dagcache serve`` writes to the pipe, into ``log`` as it comes."""
    with source, log.open("wb") as out:
        while chunk := os.read(source.fileno(), 65536):
            out.write(chunk)
            out.flush()


async def _get(client: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    async with client.get(url, headers={**AUTH, **headers}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Cache", ""), resp.headers.get("ETag", "")


def _same_request(line: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in line.items() if k not in {"ts", "duration_ms"}}


@pytest.mark.parametrize("serve", [(NO_TIMER, 1, False)], indirect=True)
async def test_every_line_is_written_at_sigterm_and_the_lane_writes_the_full_paths_line(serve: Serve) -> None:
    sent: list[tuple[str, str]] = []  # path, outcome
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        for _ in range(200):  # BYPASS until the first version poll
            sent.append((DAG, (await _get(client, serve.base + DAG))[1]))
            if sent[-1][1] != "BYPASS":
                break
            await asyncio.sleep(0.05)
        assert sent[-1] == (DAG, "MISS")
        for path, expected in ((DAG, "HIT"), (TASKS, "MISS"), (TASKS, "HIT")):
            assert (await _get(client, serve.base + path))[1] == expected
            sent.append((path, expected))
        warm = len(sent)
        # Warm and idle, one keep-alive connection: the lane answers plain GETs. A GET with a Content-Length
        # header is never the lane's: aiohttp's full path answers the same HIT with the same bytes.
        for _ in range(3):
            for path in (DAG, TASKS):
                for extra in ({"Content-Length": "0"}, {}):
                    status, cache, etag = await _get(client, serve.base + path, **extra)
                    assert (status, cache) == (200, "HIT")
                    sent.append((path, "HIT"))
                    status, _, _ = await _get(client, serve.base + path, **{"If-None-Match": etag, **extra})
                    assert status == 304
                    sent.append((path, "304"))
        assert (await _get(client, serve.base + DAG + f"?token={TOKEN}"))[1] == "BYPASS"
        sent.append((DAG, "BYPASS"))
    assert len(serve.access_lines()) < len(sent)  # some are still buffered ...
    lines = await serve.stop()  # ... and written at SIGTERM
    assert [(line["path"], line["outcome"]) for line in lines] == sent  # one per request, in order
    assert all(line["logger"] == "proxy.access" and line["level"] == "info" for line in lines)
    answered = lines[warm:-1]  # per view and round: HIT and 304 with a Content-Length, then without (the lane)
    full_path = [line for i, line in enumerate(answered) if i % 4 < 2]
    lane = [line for i, line in enumerate(answered) if i % 4 >= 2]
    assert [_same_request(line) for line in full_path] == [_same_request(line) for line in lane]
    assert len(lane) == 12 and {line["status"] for line in lane} == {200, 304} and all(line["key"] for line in lane)
    log = serve.log.read_text()
    assert TOKEN not in log and "Bearer" not in log


@pytest.mark.parametrize("serve", [([sys.executable, "-m", "proxy"], 2, True)], indirect=True)
async def test_workers_write_every_line_before_they_exit(serve: Serve) -> None:
    """Two workers and the supervisor write to one pipe: whole lines, none lost at SIGTERM."""
    requests = 600
    # A new connection per request: the kernel spreads them over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:

        async def one(i: int) -> None:
            async with client.get(f"{serve.base}/api/v2/dags/dag_{i}", headers=AUTH) as resp:
                assert resp.status == 200
                await resp.read()

        for start in range(0, requests, 30):
            await asyncio.gather(*(one(i) for i in range(start, start + 30)))
    lines = await serve.stop()  # right after the last answer: the last lines are still in the workers' buffers
    assert sorted(str(line["path"]) for line in lines) == sorted(f"/api/v2/dags/dag_{i}" for i in range(requests))
    assert {line["worker"] for line in lines} == {0, 1}
    assert TOKEN not in serve.log.read_text()

"""The log of a real ``dagcache serve`` process: each access line carries the client's request id and the trace
it belongs to, the correlation headers reach Airflow untouched, nothing is added, no credential is written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, UpstreamServer, dagcache_cmd
from tests.servers import free_port, wait_port

pytestmark = pytest.mark.functional

REQUEST_ID = "f3b5c2a1d4e6f7a8b9c0d1e2f3a4b5c6"  # what ingress-nginx sends ($req_id)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TOKEN = "eyJhbGciOiJIUzUxMiJ9.c2VjcmV0LXRva2Vu.c2ln"


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.base, self.log = proc, f"http://127.0.0.1:{port}", log

    async def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(self.proc.wait, 20) == 0
        return self.log.read_text()


@pytest.fixture
def served(request: pytest.FixtureRequest, upstream: UpstreamServer, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace = 5\n[upstream]\nurl = "{upstream.url}"\n'
        f'[admin]\nenabled = false\n[log]\nformat = "{request.param}"\n'
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dagcache_cmd("serve", "--config", str(config)),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_port(port, 30)
        yield Served(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _send(served: Served, path: str, **headers: str) -> dict[str, str]:
    """The request's headers as the upstream received them (lower-cased names)."""
    async with aiohttp.ClientSession() as client, client.get(served.base + path, headers=headers) as resp:
        assert resp.status == 200
        seen: dict[str, Any] = await resp.json()
    return {name.lower(): value for name, value in seen["headers"]}


async def _mix(served: Served) -> list[dict[str, str]]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return [
        await _send(
            served,
            f"/api/v2/dags/one?token={TOKEN}",
            **auth,
            **{"X-Request-Id": REQUEST_ID, "traceparent": TRACEPARENT, "tracestate": "vendor=opaque"},
        ),
        await _send(served, "/api/v2/dags/two", **auth),
        await _send(served, "/api/v2/dags/three", **{"X-Request-Id": 'forged" "level":"error', "traceparent": "00-x"}),
    ]


@pytest.mark.parametrize("served", ["json"], indirect=True)
async def test_json_access_lines_carry_request_and_trace_ids(served: Served) -> None:
    upstream_saw = await _mix(served)
    log = await served.stop()

    # Airflow gets the correlation headers exactly as sent, and none that the client did not send.
    assert (upstream_saw[0]["x-request-id"], upstream_saw[0]["traceparent"]) == (REQUEST_ID, TRACEPARENT)
    assert upstream_saw[0]["tracestate"] == "vendor=opaque"
    assert not {"x-request-id", "traceparent", "tracestate"} & set(upstream_saw[1])

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = {line["path"]: line for line in lines if line["logger"] == "proxy.access"}
    one, two, three = access["/api/v2/dags/one"], access["/api/v2/dags/two"], access["/api/v2/dags/three"]
    assert one["request_id"] == REQUEST_ID
    assert (one["trace_id"], one["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert (one["level"], one["route"], one["outcome"], one["status"]) == ("info", "api.dag", "BYPASS", 200)
    assert one["ts"].endswith("Z") and one["duration_ms"] >= 0
    assert two["request_id"] is None and "trace_id" not in two  # the proxy invents neither
    assert three["request_id"] is None and "trace_id" not in three  # unsafe id and invalid traceparent: dropped
    assert TOKEN not in log and "c2VjcmV0LXRva2Vu" not in log
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


@pytest.mark.parametrize("served", ["text"], indirect=True)
async def test_text_access_lines_for_humans(served: Served) -> None:
    await _mix(served)
    log = await served.stop()
    line = next(line for line in log.splitlines() if " proxy.access GET /api/v2/dags/one " in line)
    assert line.split(" ")[1] == "INFO"
    assert f" request_id={REQUEST_ID}" in line
    assert " trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7" in line
    assert TOKEN not in log and "forged" not in log

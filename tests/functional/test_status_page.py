"""The admin status page as a browser shows it: rendered by headless Chromium after a known request mix.

The screenshot is kept as a test artifact: in ``$DAGCACHE_ARTIFACTS`` when set, else in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO, UpstreamServer
from tests.functional.observability import Stack, airflow_db, bearer, until

pytestmark = pytest.mark.functional

# Read at import: the suite's autouse fixture clears DAGCACHE_* variables before each test.
ARTIFACTS = Path(os.environ.get("DAGCACHE_ARTIFACTS") or REPO / "test-artifacts")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("headless Chromium is not installed (apt-get install chromium; .ci/run installs it)")


async def run_chromium(*args: str, cwd: Path) -> bytes:
    """Run headless Chromium (asynchronously: the page it loads is served by this very event loop)."""
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",  # the suite may run as root (CI containers)
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={cwd / 'chromium-profile'}",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(90):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    return out


def keep_artifact(path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


@pytest.fixture
async def stack(upstream: UpstreamServer, redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    started = Stack()
    await started.start(
        upstream={"url": upstream.url},
        database={"url": airflow_db(tmp_path, "dag_a", "dag_b", "dag_c")},
        redis={"url": redis_url, "key_prefix": f"status{os.getpid()}"},
        versions={"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0},
    )
    yield started
    await started.aclose()


async def test_the_status_page_renders_in_headless_chromium(stack: Stack, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as client:
        # 1 MISS + 3 HIT on api.dag, 1 MISS + 1 HIT on api.dag.tasks: hit ratio 4/6 = 66.7 %.
        for path, times in (("/api/v2/dags/dag_a", 4), ("/api/v2/dags/dag_a/tasks", 2)):
            for _ in range(times):
                async with client.get(stack.base + path, headers=bearer()) as resp:
                    assert resp.status == 200

        async def versions_shown() -> bool:
            async with client.get(stack.admin + "/status.json") as resp:
                return bool((await resp.json())["versions"]["dags"] == 3)

        await until(versions_shown)
        async with client.get(stack.admin + "/status.json") as resp:
            status = await resp.json()
    assert status["hit_ratio"] == pytest.approx(4 / 6, abs=1e-4)
    assert [row["route"] for row in status["routes"]] == ["api.dag", "api.dag.tasks"]

    screenshot = tmp_path / "status-page.png"
    await run_chromium(f"--screenshot={screenshot}", "--window-size=1280,1100", stack.admin + "/", cwd=tmp_path)
    data = screenshot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 20_000  # a page with text and tables, not a blank canvas
    keep_artifact(screenshot)

    dom = (await run_chromium("--dump-dom", stack.admin + "/", cwd=tmp_path)).decode()
    assert re.search(r'id="hit-ratio"[^>]*>66\.7%<', dom)
    rows = re.findall(r'<tr class="route" data-route="([^"]+)"><td>[^<]*</td><td>(\d+)</td>', dom)
    assert rows == [("api.dag", "4"), ("api.dag.tasks", "2")]
    assert '<meta http-equiv="refresh" content="5">' in dom
    assert re.search(r"<th>DAGs</th><td>3</td>", dom)
    assert "Redis reachable" in dom
    assert "http://" not in dom.replace(stack.admin, "")  # no external asset

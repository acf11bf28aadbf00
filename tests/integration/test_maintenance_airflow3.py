"""``dagcache purge`` and ``dagcache warm`` against a fleet in front of a real Airflow 3.3, with real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.airflow.harness import AirflowInstance
from tests.conftest import dagcache_cmd
from tests.integration.conftest import CacheStarter
from tests.integration.test_cache_airflow3 import canonical, get

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _config(tmp_path: Path, redis_url: str, prefix: str) -> Path:
    config = tmp_path / "dagcache.toml"
    config.write_text(f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\n')
    return config


async def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, dagcache_cmd(*args), capture_output=True, text=True, timeout=120, env=env, check=False
    )


async def _outcome(client: aiohttp.ClientSession, url: str, token: str) -> str:
    return (await get(client, url, token))[1]["X-Cache"]


async def test_purge_rekeys_one_dag_or_all_across_the_fleet(
    start_cache: CacheStarter, airflow3: AirflowInstance, redis_url: str, tmp_path: Path
):
    prefix = "purge-it"
    bases = [await start_cache(prefix=prefix), await start_cache(prefix=prefix)]
    token = airflow3.token("admin")
    purged, kept = "/api/v2/dags/small_009/tasks", "/ui/structure/structure_data?dag_id=small_000"
    config = _config(tmp_path, redis_url, prefix)
    async with aiohttp.ClientSession() as client:
        _, headers, before = await get(client, bases[0] + purged, token)
        etag = headers["ETag"]
        for base in bases:
            assert await _outcome(client, base + purged, token) == "HIT"
            await get(client, base + kept, token)
            assert await _outcome(client, base + kept, token) == "HIT"
        _, headers, _ = await get(client, bases[0] + kept, token)
        kept_etag = headers["ETag"]

        done = await _cli("purge", "--config", str(config), "--dag", "small_009")
        assert done.returncode == 0, done.stderr
        assert "1 DAG(s) keyed anew" in done.stdout
        assert int(done.stdout.split(",")[1].split()[0]) >= 1  # "..., N Redis keys deleted"
        for base in bases:  # both processes key the purged DAG anew, L1 copies included; the other DAG stays
            async with asyncio.timeout(5):
                while (await get(client, base + purged, token))[1]["ETag"] == etag:
                    await asyncio.sleep(0.05)
            _, headers, _ = await get(client, base + kept, token)
            assert (headers["X-Cache"], headers["ETag"]) == ("HIT", kept_etag)
        status, headers, after = await get(client, bases[1] + purged, token)
        assert (status, headers["X-Cache"]) == (200, "HIT")
        assert canonical(after) == canonical(before)

        unknown = await _cli("purge", "--config", str(config), "--dag", "no_such_dag")
        assert unknown.returncode == 1
        assert "not in the fleet's version map: no_such_dag" in unknown.stderr

        everything = await _cli("purge", "--config", str(config))
        assert everything.returncode == 0, everything.stderr
        async with asyncio.timeout(5):
            while (await get(client, bases[0] + kept, token))[1]["ETag"] == kept_etag:
                await asyncio.sleep(0.05)


async def test_purge_needs_redis(tmp_path: Path):
    config = tmp_path / "dagcache.toml"
    config.write_text("[cache]\nmode = 'on'\n")
    done = await _cli("purge", "--config", str(config))
    assert done.returncode == 2
    assert "purge needs [redis] url" in done.stderr
    assert "Traceback" not in done.stderr


async def test_warm_fills_definition_views_for_that_credential(
    start_cache: CacheStarter, airflow3: AirflowInstance
):
    base = await start_cache(prefix="warm-it")
    token = airflow3.token("admin", fresh=True)
    done = await _cli("warm", "--proxy", base, "--token", token, "--dag", "small_005", "--dag", "small_006")
    assert done.returncode == 0, done.stderr
    assert "warmed 2 DAG(s): 8/8 views (MISS 8)" in done.stdout
    async with aiohttp.ClientSession() as client:
        for path in (
            "/api/v2/dags/small_005/tasks",
            "/ui/structure/structure_data?dag_id=small_006&external_dependencies=false",
        ):
            assert await _outcome(client, base + path, token) == "HIT"

    # Every DAG, logging in by name (the password from the environment); a second run finds them all.
    env = {**os.environ, "DAGCACHE_WARM_PASSWORD": airflow3.passwords["admin"]}
    first = await _cli("warm", "--proxy", base, "--username", "admin", env=env)
    assert first.returncode == 0, first.stderr
    dags = int(first.stdout.split()[1])
    assert dags >= 11  # small_000..small_009 and big_dag
    assert f"{4 * dags}/{4 * dags} views (MISS {4 * dags})" in first.stdout

    wrong = await _cli("warm", "--proxy", base, "--username", "admin", env={**env, "DAGCACHE_WARM_PASSWORD": "x"})
    assert wrong.returncode == 1
    assert "login as 'admin' failed: HTTP 401" in wrong.stderr

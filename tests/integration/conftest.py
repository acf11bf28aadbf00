"""Fixtures shared by the integration suites: dagcache in front of the real Airflow 3 (``start_cache``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from proxy.app import VERSIONS, create_app
from proxy.server import bind_socket, make_runner
from tests.airflow.harness import AirflowInstance
from tests.conftest import make_settings
from tests.servers import free_port


class CacheStarter:
    """``await start_cache(prefix=..., **sections)`` runs a dagcache app in this process in front of
    ``airflow3`` with real Redis and the Airflow DB, waits for its versions and returns its base URL.
    ``upstream_url`` and ``database_url`` reroute it (e.g. through a :class:`tests.relay.TcpRelay`); ``apps``
    lists what started; instances with the same ``prefix`` form one fleet."""

    def __init__(self, airflow: AirflowInstance, redis_url: str, prefix: str) -> None:
        self.airflow = airflow
        self.redis_url = redis_url
        self.prefix = prefix
        self.apps: list[web.Application] = []
        self.runners: list[web.AppRunner] = []

    async def __call__(
        self,
        *,
        prefix: str | None = None,
        upstream_url: str | None = None,
        database_url: str | None = None,
        **sections: dict[str, Any],
    ) -> str:
        port = free_port()
        redis = {"url": self.redis_url, "key_prefix": prefix or self.prefix, **sections.pop("redis", {})}
        settings = make_settings(
            server={"host": "127.0.0.1", "port": port},
            upstream={"url": upstream_url or self.airflow.base_url},
            database={"url": database_url or self.airflow.db_url},
            redis=redis,
            versions={"poll_interval": 0.2, "lease_ttl": 2.0, "state_max_age": 0, **sections.pop("versions", {})},
            **sections,
        )
        app = create_app(settings)
        runner = make_runner(app, settings)
        await runner.setup()
        await web.SockSite(runner, bind_socket("127.0.0.1", port, reuse_port=False)).start()
        self.runners.append(runner)
        self.apps.append(app)
        async with asyncio.timeout(20):
            await app[VERSIONS].wait_ready()
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def start_cache(
    airflow3: AirflowInstance, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[CacheStarter]:
    starter = CacheStarter(airflow3, redis_url, f"it{abs(hash(request.node.nodeid)) % 10**8}")
    yield starter
    await starter.aclose()

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.config import Settings
from proxy.server import bind_socket, make_runner
from tests.servers import free_port, postgres_server, redis_server
from tests.upstream_app import GATES, Gates, make_upstream_app

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.airflow.conftest_fixtures"]


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DAGCACHE_* setting from the developer's shell leaks into a test (test-server URLs excepted)."""
    for key in list(os.environ):
        if key.startswith("DAGCACHE_") and not key.startswith("DAGCACHE_TEST_") and key != "DAGCACHE_AIRFLOW_VENVS":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Settings from defaults plus ``section={key: value}`` overrides, validated like a config file."""
    data: dict[str, Any] = {"admin": {"enabled": False}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings(**data)


class UpstreamServer:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def gates(self) -> Gates:
        return self.runner.app[GATES]


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamServer]:
    runner = web.AppRunner(make_upstream_app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield UpstreamServer(runner, port)
    await runner.cleanup()


StartProxy = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_proxy(upstream: UpstreamServer) -> AsyncIterator[StartProxy]:
    """Start the real proxy (its runner, parser limits and handler) on a free loopback port."""
    runners: list[web.AppRunner] = []

    async def start(**sections: dict[str, Any]) -> str:
        sections.setdefault("upstream", {}).setdefault("url", upstream.url)
        port = free_port()
        sections.setdefault("server", {}).update(host="127.0.0.1", port=port)
        settings = make_settings(**sections)
        runner = make_runner(create_app(settings), settings)
        await runner.setup()
        await web.SockSite(runner, bind_socket("127.0.0.1", port, reuse_port=False)).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def dagcache_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *args]

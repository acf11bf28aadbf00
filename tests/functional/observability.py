"""Helpers for the observability tests: the whole proxy (versions leader, cache, admin listener) in this process
in front of the stand-in upstream, over real Redis and an Airflow-3-shaped SQLite metadata DB."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert

from proxy.admin import start_admin
from proxy.airflow import schema
from proxy.app import VERSIONS, create_app
from proxy.metrics import Telemetry
from proxy.server import bind_socket, make_runner
from proxy.status import Samples
from tests.conftest import make_settings
from tests.servers import free_port


def airflow_db(directory: Path, *dag_ids: str) -> str:
    """An Airflow-3-shaped metadata DB (the tables dagcache reads) holding ``dag_ids``."""
    path = directory / "airflow.db"
    engine = create_engine(f"sqlite:///{path}")
    schema.COMMON.create_all(engine)
    schema.AIRFLOW3.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(schema.alembic_version).values(version_num="observability-test"))
        for dag_id in dag_ids:
            conn.execute(insert(schema.dag3).values(dag_id=dag_id, is_paused=False))
    engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


def bearer(subject: str = "user1") -> dict[str, str]:
    """A JWT-shaped credential (credential scope does not verify the signature; Airflow would)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": subject, "jti": "observability", "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.c2ln"}


class Stack:
    """One dagcache process's apps (proxy + admin) sharing a private :class:`Telemetry`."""

    def __init__(self) -> None:
        self.telemetry = Telemetry()
        self.runners: list[web.AppRunner] = []
        self.base = ""
        self.admin = ""
        self.app: web.Application | None = None

    async def start(self, **sections: dict[str, Any]) -> Stack:
        port, admin_port = free_port(), free_port()
        sections.setdefault("server", {}).update(host="127.0.0.1", port=port)
        sections.setdefault("admin", {}).update(enabled=True, host="127.0.0.1", port=admin_port, readiness_cache=0)
        settings = make_settings(**sections)
        self.app = create_app(settings, self.telemetry)
        runner = make_runner(self.app, settings)
        await runner.setup()
        await web.SockSite(runner, bind_socket("127.0.0.1", port, reuse_port=False)).start()
        self.runners.append(runner)
        self.runners.append(await start_admin(settings, registry=self.telemetry.registry))
        self.base, self.admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
        if settings.database.url:
            async with asyncio.timeout(20):
                await self.app[VERSIONS].wait_ready()
        return self

    async def aclose(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


async def scrape(client: aiohttp.ClientSession, admin: str) -> Samples:
    """``/metrics`` parsed as Prometheus text (what a Prometheus server would read)."""
    async with client.get(admin + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Samples.of(text_string_to_metric_families(await resp.text()))


def table(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], int]:
    """``{(label values...): value}`` of a counter, zero rows dropped."""
    rows: dict[tuple[str, ...], int] = {}
    for sample_labels, value in samples.by_name.get(name, []):
        if value:
            key = tuple(sample_labels[label] for label in labels)
            rows[key] = rows.get(key, 0) + int(value)
    return rows


async def until(predicate: Any, timeout: float = 15.0, interval: float = 0.2) -> None:
    """Await ``predicate()`` (a coroutine function returning bool) until it holds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)

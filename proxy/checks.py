"""``dagcache check``: is the configuration valid, and can each dependency be reached?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cache.redis_store import REDIS_ERRORS
from proxy.airflow.source import SqlVersionSource
from proxy.app import make_redis
from proxy.config import Settings, redact_url
from proxy.database import make_engine
from proxy.errors import ConfigError, VersionLookupError
from proxy.redisurl import parse_redis_url


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    target: str
    ok: bool | None  # None: not configured
    detail: str


async def run_checks(settings: Settings) -> list[CheckResult]:
    return list(await asyncio.gather(check_upstream(settings), check_redis(settings), check_database(settings)))


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


def _reason(exc: BaseException) -> str:
    text_ = str(exc).strip()
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) and not text_:
        return "timed out"
    return f"{type(exc).__name__}: {text_}" if text_ else type(exc).__name__


async def check_upstream(settings: Settings) -> CheckResult:
    url = settings.upstream.url + settings.upstream.readiness_path
    timeout = aiohttp.ClientTimeout(total=settings.upstream.connect_timeout + 5.0)
    start = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False) as session,
            session.get(url, allow_redirects=False, timeout=timeout) as resp,
        ):
            ok = resp.status < 500
            return CheckResult("upstream", settings.upstream.url, ok, f"HTTP {resp.status} in {_ms(start)}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return CheckResult("upstream", settings.upstream.url, False, _reason(exc))


async def check_redis(settings: Settings) -> CheckResult:
    config = settings.redis
    if not config.url:
        return CheckResult("redis", "-", None, "not configured: embedded in-process store (one process, not shared)")
    client = make_redis(config)
    topology = parse_redis_url(config.url).topology
    start = time.perf_counter()
    try:
        await client.ping()
        info = await client.info("server")
        # A cluster answers per node ({"host:port": {...}}) or merged, depending on redis-py's version.
        versions = {str(i.get("redis_version", "?")) for i in info.values() if isinstance(i, dict)}
        version = str(info.get("redis_version", "")) or ",".join(sorted(versions)) or "?"
        where = "" if topology == "standalone" else f" {topology}"
        detail = f"PING ok in {_ms(start)} (Redis {version}{where})"
        return CheckResult("redis", redact_url(config.url), True, detail)
    except (*REDIS_ERRORS, TimeoutError) as exc:
        return CheckResult("redis", redact_url(config.url), False, _reason(exc))
    finally:
        await client.aclose()


async def check_database(settings: Settings) -> CheckResult:
    config = settings.database
    if not config.url:
        return CheckResult("database", "-", None, "not configured: DAG versions unavailable, views pass through")
    target = redact_url(config.url)
    try:
        engine = make_engine(config)
    except ConfigError as exc:
        return CheckResult("database", target, False, str(exc))
    start = time.perf_counter()
    try:
        async with asyncio.timeout(config.connect_timeout + 5.0), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        connected = _ms(start)
        schema = await SqlVersionSource(engine, statement_timeout=settings.versions.statement_timeout).detect()
        detail = f"connected in {connected}; Airflow {schema.major} schema (alembic revision {schema.revision})"
        return CheckResult("database", target, True, detail)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        return CheckResult("database", target, False, _reason(getattr(exc, "orig", None) or exc))
    except VersionLookupError as exc:
        return CheckResult("database", target, False, str(exc))
    finally:
        await engine.dispose()


def render(results: list[CheckResult]) -> str:
    width = max(len(r.target) for r in results)
    marks = {True: "ok", False: "FAIL", None: "-"}
    lines = [f"{r.name:<9} {marks[r.ok]:<5} {r.target:<{width}}  {r.detail}" for r in results]
    return "\n".join(lines)

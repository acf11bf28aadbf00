"""``dagcache purge`` and ``dagcache warm``: operator commands against a running fleet.

* purge — invalidate, then reclaim. The definition and state versions of the DAGs (all, or ``--dag``) are
  raised in the fleet's map in Redis, exactly as a read-your-writes bump does, so every process of every
  replica keys those views anew at once (their in-process L1 copies are never read again); then the stored
  entries of those DAGs (all entries, without ``--dag``) are deleted from Redis to give the memory back.
  Entries are keyed by versions, so purging is never needed for correctness; it is for a render you do not
  want to keep serving (an Airflow bug, a plugin change) and for memory.
* warm — request the definition views of every DAG (or ``--dag``) through the proxy with one credential, so
  they are filled before users arrive. An entry is shared only within its scope: with ``[cache] scope =
  "role"`` warming with one user's token fills them for everyone with that role; with the default
  ``credential`` scope only for requests with that same token (a service account, a wallboard).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import quote

import aiohttp

from cache.keys import KEY_LAYOUT
from cache.redis_store import RedisClient
from proxy.config import Settings
from proxy.errors import ProxyError
from proxy.versions.redis_store import RedisVersionStore


class MaintenanceError(ProxyError):
    """A purge or warm that cannot be done as asked (the message says why)."""


# ----- purge ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    invalidated: int  # DAGs whose versions were raised
    deleted: int  # Redis keys removed
    unknown: tuple[str, ...]  # --dag ids the fleet's map does not know


def entry_pattern(key_prefix: str, dag_id: str | None) -> str:
    """The Redis ``SCAN MATCH`` pattern of the stored entries (and fill locks) of one DAG, or of all.

    Keys are ``{key_prefix}:{namespace}:e1:{route}:{{namespace}:{dag}}:...`` (:mod:`cache.keys`) with the
    namespace equal to the prefix and every free part percent-encoded, so no glob character can occur in
    ``dag`` once encoded; ``%`` is not special to Redis globs."""
    base = f"{key_prefix}:{key_prefix}:{KEY_LAYOUT}:"
    if dag_id is None:
        return base + "*"
    encoded = quote(dag_id, safe="")
    for special in "*?[]\\":
        encoded = encoded.replace(special, "\\" + special)  # quote() leaves none of these; kept for safety
    return base + "*:{" + key_prefix + ":" + encoded + "}:*"


async def purge(client: RedisClient, key_prefix: str, dag_ids: Sequence[str] | None) -> PurgeResult:
    store = RedisVersionStore(client, key_prefix)
    current = await store.load_map()
    known = set(current.dags) if current is not None else set()
    unknown = tuple(d for d in dag_ids or () if d not in known)
    targets = [d for d in dag_ids if d in known] if dag_ids else sorted(known)
    invalidated = 0
    if targets or (current is not None and not dag_ids):
        if await store.bump(targets, time.time(), listing=not dag_ids, definition=True):
            invalidated = len(targets)
    deleted = 0
    for pattern in [entry_pattern(key_prefix, d) for d in dag_ids] if dag_ids else [entry_pattern(key_prefix, None)]:
        deleted += await _unlink_matching(client, pattern)
    return PurgeResult(invalidated, deleted, unknown)


async def _unlink_matching(client: RedisClient, pattern: str, batch: int = 500) -> int:
    deleted = 0
    keys: list[bytes | str] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        keys.append(key)
        if len(keys) >= batch:
            deleted += await _unlink(client, keys)
            keys = []
    if keys:
        deleted += await _unlink(client, keys)
    return deleted


async def _unlink(client: RedisClient, keys: Iterable[bytes | str]) -> int:
    # One UNLINK per key in a pipeline: works on one server and on a Cluster (keys of many slots).
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.unlink(key)
        results = await pipe.execute()
    return sum(int(r) for r in results)


# ----- warm -----------------------------------------------------------------------------------------------

#: The definition views of one DAG (Airflow 3), as the UI asks for them.
DEFINITION_VIEWS_3 = (
    "/api/v2/dags/{dag}/tasks",
    "/api/v2/dagSources/{dag}",
    "/ui/structure/structure_data?dag_id={dag}&external_dependencies=false",
    "/api/v2/dags/{dag}/dagVersions",
)


@dataclass
class WarmReport:
    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # X-Cache value (or "HTTP nnn") -> count
    failures: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def line(self) -> str:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items()))
        return f"{self.done}/{self.total} views" + (f" ({parts})" if parts else "")


def warm_targets(dag_ids: Iterable[str]) -> list[str]:
    """Every definition view of every DAG, DAG by DAG (pure)."""
    return [view.format(dag=quote(dag, safe="")) for dag in dag_ids for view in DEFINITION_VIEWS_3]


async def login(session: aiohttp.ClientSession, proxy: str, username: str, password: str) -> str:
    """A JWT from Airflow 3's ``POST /auth/token`` (through the proxy, which passes it through)."""
    async with session.post(f"{proxy}/auth/token", json={"username": username, "password": password}) as resp:
        if resp.status not in (200, 201):
            raise MaintenanceError(f"login as {username!r} failed: HTTP {resp.status} from {proxy}/auth/token")
        body = await resp.json(content_type=None)
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise MaintenanceError(f"{proxy}/auth/token answered without an access_token")
    return token


async def list_dags(session: aiohttp.ClientSession, proxy: str, token: str) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        url = f"{proxy}/api/v2/dags?limit=100&offset={offset}&order_by=dag_id"
        async with session.get(url, headers=_auth(token)) as resp:
            if resp.status != 200:
                raise MaintenanceError(f"listing DAGs failed: HTTP {resp.status} from {url}")
            body = await resp.json(content_type=None)
        page = [d["dag_id"] for d in body.get("dags", [])]
        ids += page
        offset += len(page)
        if not page or offset >= int(body.get("total_entries", 0)):
            return ids


async def warm(
    session: aiohttp.ClientSession,
    proxy: str,
    token: str,
    paths: Sequence[str],
    *,
    concurrency: int,
    progress: Callable[[WarmReport], None] = lambda report: None,
) -> WarmReport:
    report = WarmReport(total=len(paths))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)

    async def worker() -> None:
        while not queue.empty():
            path = queue.get_nowait()
            try:
                async with session.get(proxy + path, headers=_auth(token)) as resp:
                    await resp.read()
                    outcome = resp.headers.get("X-Cache", "") if resp.status == 200 else f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = "error"
                report.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            if outcome.startswith("HTTP") and len(report.failures) < 20:
                report.failures.append(f"{path}: {outcome}")
            report.outcomes[outcome or "not cached"] += 1
            progress(report)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return report


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ProgressLine:
    """One status line on stderr, redrawn in place on a terminal (printed every 10% otherwise)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._last_decile = -1

    def __call__(self, report: WarmReport) -> None:
        total = max(report.total, 1)
        width = 30
        filled = width * report.done // total
        text = f"{self._label} [{'#' * filled}{'.' * (width - filled)}] {report.line()}"
        if self._tty:
            print("\r" + text, end="" if report.done < report.total else "\n", file=self._stream, flush=True)
            return
        decile = 10 * report.done // total
        if decile != self._last_decile:
            self._last_decile = decile
            print(text, file=self._stream, flush=True)


def default_proxy_url(settings: Settings) -> str:
    """Where this configuration's proxy listens, as a URL a local client can use."""
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}{settings.server.base_path}"

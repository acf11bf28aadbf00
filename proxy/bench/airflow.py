"""What the runner needs from an Airflow upstream, whatever its major version: :class:`Setup`.

:func:`proxy.bench.airflow3.prepare` (api-server, Bearer tokens, the UI mix of :mod:`proxy.bench.mix`) and
:func:`proxy.bench.airflow2.prepare` (webserver, session cookies, :mod:`proxy.bench.mix2`) log the simulated users
in, read what the mix needs from the upstream and return one. :func:`detect_major` tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from proxy.bench import BenchError
from proxy.bench.mix2 import major_of
from proxy.bench.report import Phase
from proxy.bench.users import Recorder


class SimulatedUser(Protocol):
    async def run(self, deadline: float, start_delay: float = 0.0) -> None: ...


class PhaseAudit(Protocol):
    def apply(self, phase: Phase, user_regressions: int) -> None: ...


class PhaseAuditor(Protocol):
    dag_id: str

    async def open(self) -> None: ...

    async def run_phase(self, base_url: str, deadline: float) -> PhaseAudit: ...

    async def restore(self) -> list[str]: ...


UserFactory = Callable[[int, aiohttp.ClientSession, str, Recorder], SimulatedUser]
"""``(index, session, target URL, recorder)`` -> the simulated user ``index`` on that target."""


@dataclass(slots=True)
class Setup:
    version: str | None  # Airflow's
    refresh: float  # seconds between two polls of an open page
    dags: int  # DAGs the upstream lists
    user: UserFactory
    settle_path: str  # a cheap authenticated GET: the upstream has worked off its backlog once it answers fast
    settle_headers: Mapping[str, str]
    auditor: PhaseAuditor | None = None  # with --audit; opened and restored by the runner
    meta: dict[str, object] = field(default_factory=dict)  # more for results.json
    notes: list[str] = field(default_factory=list)  # for results.md


async def detect_major(upstream: str) -> int:
    """2 when ``/api/v1/version`` (unauthenticated on Airflow 2) names a 2.x release, 3 when ``/api/v2/version``
    exists (Airflow 3 has no ``/api/v1``)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            async with session.get(upstream + "/api/v1/version", allow_redirects=False) as resp:
                payload = await resp.json(content_type=None) if resp.status == 200 else None
            if major_of(payload) == 2:
                return 2
            async with session.get(upstream + "/api/v2/version", allow_redirects=False) as resp:
                await resp.read()
                if resp.status in (200, 401, 403):
                    return 3
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BenchError(
                f"cannot reach the upstream {upstream} (GET .../version): {type(exc).__name__}: {exc}".rstrip()
            ) from None
    raise BenchError(f"{upstream} answers neither /api/v1/version (Airflow 2) nor /api/v2/version (Airflow 3)")

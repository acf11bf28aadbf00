"""Optional StatsD export (``[metrics] statsd = "host:port"``): plain UDP, no dependency.

Every ``statsd_interval`` seconds the admin listener reads the same registry as ``/metrics`` (with
``--workers N``: every worker, aggregated) and sends counters as increments since the last push (``|c``) and
gauges as values (``|g``). Labels become DogStatsD tags (``|#route:api.dag,outcome:HIT``, understood by
statsd_exporter, the Datadog agent and Telegraf) or, with ``statsd_tags = false``, name segments
(``dagcache.requests.api_dag.HIT.200``). Histograms stay Prometheus-only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress

from prometheus_client import CollectorRegistry, Metric

from proxy.config import parse_host_port
from proxy.tasks import spawn

log = logging.getLogger("proxy.statsd")

_MAX_PACKET = 1400  # stays inside one Ethernet frame
Previous = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _clean(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)


def statsd_lines(families: Iterable[Metric], previous: Previous, *, prefix: str, tags: bool) -> list[str]:
    """StatsD lines for ``families``; ``previous`` (counter values of the last push) is updated in place.

    A counter's first sight sends its whole value; a counter that went down (a restart) sends nothing.
    """
    lines: list[str] = []
    for family in families:
        if family.type not in ("counter", "gauge"):
            continue
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_total"):
                continue  # *_created
            name = (
                sample.name.removeprefix("dagcache_").removesuffix("_total")
                if family.type == "counter"
                else (sample.name.removeprefix("dagcache_"))
            )
            labels = tuple(sorted(sample.labels.items()))
            value = float(sample.value)
            if family.type == "counter":
                key = (sample.name, labels)
                before = previous.get(key, 0.0)
                previous[key] = value
                value, kind = value - before, "c"
                if value <= 0:
                    continue
            else:
                kind = "g"
            number = f"{value:.0f}" if value == int(value) else f"{value:.6g}"
            if tags:
                suffix = "|#" + ",".join(f"{_clean(k)}:{_clean(v)}" for k, v in labels) if labels else ""
                lines.append(f"{prefix}.{name}:{number}|{kind}{suffix}")
            else:
                path = "".join(f".{_clean(v)}" for _, v in labels)
                lines.append(f"{prefix}.{name}{path}:{number}|{kind}")
    return lines


def packets(lines: Iterable[str], size: int = _MAX_PACKET) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most ``size`` bytes (a longer line goes alone)."""
    out: list[bytes] = []
    current = b""
    for line in lines:
        data = line.encode()
        if current and len(current) + 1 + len(data) > size:
            out.append(current)
            current = b""
        current = current + b"\n" + data if current else data
    if current:
        out.append(current)
    return out


class StatsdPusher:
    """Pushes the registry to one StatsD address over UDP; never raises (a lost datagram is StatsD's nature)."""

    def __init__(self, registry: CollectorRegistry, address: str, *, prefix: str, tags: bool) -> None:
        self._registry = registry
        self._host, self._port = parse_host_port(address)
        self._prefix = prefix
        self._tags = tags
        self._previous: Previous = {}
        self._sock: socket.socket | None = None
        self._target: tuple[object, ...] | None = None
        self._failing = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("StatsD address %s:%d does not resolve (%s); will retry", self._host, self._port, exc)
            return
        family, _, _, _, target = infos[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._target = target

    @property
    def opened(self) -> bool:
        return self._sock is not None

    def push(self) -> int:
        """Send what changed since the last push; returns the number of datagrams sent."""
        if self._sock is None or self._target is None:
            return 0
        sent = 0
        for datagram in packets(
            statsd_lines(self._registry.collect(), self._previous, prefix=self._prefix, tags=self._tags)
        ):
            try:
                self._sock.sendto(datagram, self._target)
                sent += 1
                self._failing = False
            except OSError as exc:
                if not self._failing:
                    log.warning("StatsD push to %s:%d failed: %s", self._host, self._port, exc)
                    self._failing = True
        return sent

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def run_pusher(pusher: StatsdPusher, interval: float) -> AsyncIterator[None]:
    """For a ``cleanup_ctx``: push every ``interval`` seconds, and once more at shutdown."""
    await pusher.open()

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            if not pusher.opened:
                await pusher.open()
            pusher.push()

    task = spawn(loop(), name="statsd-push")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    pusher.push()
    pusher.close()

"""A TCP relay for failure injection: tests put it between dagcache and a real server (Airflow, PostgreSQL)
and switch it to ``down`` (connections refused, open ones cut) or ``http503`` (every new connection gets one
``503 Service Unavailable`` answer) and back to ``up``. The real servers behind it are never touched."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["up", "down", "http503"]

_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n"
    b"Connection: close\r\n\r\ndown"
)


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "up"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def set_mode(self, mode: Mode) -> None:
        if mode == self.mode:
            return
        if mode == "down":
            await self._stop_listening()
            self._cut_all()
        elif self.mode == "down":
            await self.start(self.port)
        if mode == "http503":
            self._cut_all()
        self.mode = mode

    async def aclose(self) -> None:
        await self._stop_listening()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "http503":
            with contextlib.suppress(OSError):
                await reader.read(65536)
                writer.write(_503)
                await writer.drain()
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [asyncio.ensure_future(_pump(reader, up_writer)), asyncio.ensure_future(_pump(up_reader, writer))]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

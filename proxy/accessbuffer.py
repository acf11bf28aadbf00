"""Access lines waiting to be written: one write for a batch of lines instead of one per line.

:meth:`AccessBuffer.add` keeps a line, :meth:`AccessBuffer.defer` what renders one (called when the batch is
written: aiohttp's full path logs a request between writing its answer and waiting for the connection's next
request, and work done there keeps a busy connection off the hit lane; see :mod:`proxy.logs`). The batch is
written (one ``write`` call, so one ``write(2)`` on stderr) when it reaches :data:`FLUSH_CHARS` characters or
:data:`FLUSH_DEFERRED` deferred lines, :data:`FLUSH_INTERVAL` seconds after its first line (a timer on the
running event loop; outside one, a line is written at once), before any other log line
(:class:`proxy.logs.LogHandler` flushes first, so lines keep the order in which they were logged), and at
shutdown (:func:`proxy.logs.flush`, and ``logging.shutdown`` at interpreter exit). What a crash (SIGKILL, a
segfault, ``os._exit``) loses: the lines of the last :data:`FLUSH_INTERVAL` seconds at most, never more than
one batch.

Memory is bounded: a batch is written, synchronously, as soon as it is full, and a batch that cannot be written
is dropped (the writer reports it). Lines are added on the event loop's thread; a flush may come from any thread
(a log line from a worker thread flushes first): the lines are a ``deque`` (appends and pops are atomic) and
flushes hold the log handler's lock, the same one its other lines are written under.

Where several processes write to one pipe (``--workers N``), the writer cuts a batch with :func:`pieces`: the
kernel writes at most ``PIPE_BUF`` (4 KiB) to a pipe without another writer's bytes in the middle.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

#: Seconds between a batch's first line and its write, at most.
FLUSH_INTERVAL = 0.1
#: A batch is written once its lines hold this many characters (the lines are ASCII in the JSON format).
FLUSH_CHARS = 64 * 1024
#: ... or once it holds this many deferred lines (what they hold, e.g. a request, stays alive until then).
FLUSH_DEFERRED = 256
#: Characters a deferred line counts for, until it is rendered.
DEFERRED_CHARS = FLUSH_CHARS // FLUSH_DEFERRED

Render = Callable[..., str]


class AccessBuffer:
    """Lines (without newline) to be passed to ``write`` in batches (joined, each ending in a newline).
    ``write`` must not raise: it reports what it could not write itself; ``failed`` is called with the
    exception when a deferred line cannot be rendered (that line is left out)."""

    __slots__ = (
        "_chars",
        "_failed",
        "_interval",
        "_limit",
        "_lines",
        "_lock",
        "_timer",
        "_write",
        "batches",
        "lines",
    )

    def __init__(
        self,
        write: Callable[[str], None],
        lock: AbstractContextManager[Any] | None = None,
        *,
        failed: Callable[[Exception], None] | None = None,
        interval: float | None = None,
        limit: int | None = None,
    ) -> None:
        self._write = write
        self._lock: AbstractContextManager[Any] = lock if lock is not None else threading.RLock()
        self._failed = failed
        self._interval = FLUSH_INTERVAL if interval is None else interval  # read now: a test may change them
        self._limit = FLUSH_CHARS if limit is None else limit
        self._lines: deque[str | tuple[Render, tuple[Any, ...]]] = deque()
        self._chars = 0
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0  # writes made
        self.lines = 0  # lines handed to them

    def add(self, line: str) -> None:
        """Keep ``line``; write the batch if it is full, or make sure a timer will."""
        self._lines.append(line)
        self._chars += len(line) + 1
        if self._chars >= self._limit:
            self.flush()
        elif self._timer is None:
            self._arm()

    def defer(self, render: Render, args: tuple[Any, ...]) -> None:
        """Keep ``render(*args)``'s line, to be rendered when the batch is written."""
        self._lines.append((render, args))
        self._chars += DEFERRED_CHARS
        if self._chars >= self._limit:
            self.flush()
        elif self._timer is None:
            self._arm()

    def __len__(self) -> int:
        return len(self._lines)

    def _arm(self) -> None:
        loop = asyncio.events._get_running_loop()
        if loop is None:
            self.flush()  # no loop to flush later: now
        else:
            self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every line kept so far, in one ``write``."""
        with self._lock:
            self._chars = 0  # before taking the lines: a line added meanwhile is counted for the next batch
            lines = self._lines
            count = len(lines)
            if not count:
                return
            popleft = lines.popleft
            texts: list[str] = []
            for _ in range(count):
                item = popleft()
                if isinstance(item, str):
                    texts.append(item)
                    continue
                try:
                    texts.append(item[0](*item[1]))
                except Exception as exc:
                    if self._failed is not None:
                        self._failed(exc)
            if not texts:
                return
            self.batches += 1
            self.lines += len(texts)
            self._write("\n".join(texts) + "\n")

    def close(self) -> None:
        """Flush, and forget the timer (call it on the loop's thread, e.g. before the loop closes)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()


def pieces(text: str, limit: int) -> list[str]:
    """``text`` (lines, each ending in a newline) cut at line ends into pieces of at most ``limit`` bytes in UTF-8
    (a longer line is a piece of its own)."""
    if len(text) <= limit and (text.isascii() or len(text.encode()) <= limit):
        return [text]
    found: list[str] = []
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        length = len(line) if line.isascii() else len(line.encode())
        if piece and size + length > limit:
            found.append("".join(piece))
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        found.append("".join(piece))
    return found

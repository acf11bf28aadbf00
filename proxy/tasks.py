"""Background tasks: named, referenced until done (the event loop keeps only weak references)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_RUNNING: set[asyncio.Task[Any]] = set()
log = logging.getLogger("proxy.tasks")


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a named task; an unexpected exception is logged, never lost silently."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the one sanctioned call
    _RUNNING.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())

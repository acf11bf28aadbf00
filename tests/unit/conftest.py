"""Fixtures shared by the unit tests of logging."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from proxy import logs
from proxy.config import LogConfig
from proxy.logs import LogHandler


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """``configure()`` for real (it replaces the root handlers, pytest's too), its stream swapped for a buffer by
    :func:`install_logging`; the root logger and logging's module flags restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("proxy.access").disabled
    flags = logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile
    buffer = io.StringIO()
    yield buffer
    root.handlers[:], level, logging.getLogger("proxy.access").disabled = saved
    root.setLevel(level)
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile = flags
    structlog.reset_defaults()


def install_logging(buffer: io.StringIO, config: LogConfig, worker: int | None = None) -> LogHandler:
    """:func:`proxy.logs.configure` with ``config``, its root handler writing to ``buffer``."""
    logs.configure(config, worker=worker)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, LogHandler)
    handler.setStream(buffer)
    return handler

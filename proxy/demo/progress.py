"""What ``dagcache demo`` shows while it works: pip's output summarized on one line, and the live cache line.

:class:`PipSummary` and :func:`status_line` are pure; :class:`OneLine` writes to a terminal (one line,
rewritten in place) or, when the stream is not a terminal, an occasional plain line.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from proxy.caching import CacheCounters
from proxy.versions.service import VersionStats

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _package(spec: str) -> str:
    """``'pendulum>=3 (from x)'`` -> ``pendulum``; ``'/f/psycopg2_binary-2.9.whl (2 MB)'`` -> ``psycopg2_binary``."""
    spec = spec.strip()
    token = spec.split(" ", 1)[0]
    if "/" in token or token.endswith((".whl", ".tar.gz", ".zip")):
        spec = token.rsplit("/", 1)[-1].split("-", 1)[0]
    match = _NAME.match(spec)
    return match.group(0) if match else spec


@dataclass
class PipSummary:
    """The state of a ``pip install`` read from its output lines, for one status line."""

    phase: str = "starting"
    seen: set[str] = field(default_factory=set)
    downloads: int = 0
    installing: int = 0
    last: str = ""

    def feed(self, line: str) -> bool:
        """Take one output line; True when the summary changed."""
        text = line.strip()
        for prefix in ("Collecting ", "Processing "):
            if text.startswith(prefix):
                self.phase = "resolving"
                self.last = _package(text[len(prefix) :])
                self.seen.add(self.last.lower().replace("-", "_"))
                return True
        if text.startswith("Downloading "):
            self.downloads += 1
            self.last = _package(text[len("Downloading ") :])
            return True
        if text.startswith("Installing collected packages:"):
            self.phase = "installing"
            self.installing = len([p for p in text.split(":", 1)[1].split(",") if p.strip()])
            return True
        if text.startswith("Successfully installed"):
            self.phase = "installed"
            return True
        return False

    def render(self, elapsed: float) -> str:
        clock = f"{elapsed:.0f} s"
        if self.phase == "resolving":
            return f"resolving: {len(self.seen)} packages, {self.downloads} downloaded (last: {self.last}) {clock}"
        if self.phase == "installing":
            return f"installing {self.installing} packages {clock}"
        if self.phase == "installed":
            return f"installed {clock}"
        return f"starting pip {clock}"


class OneLine:
    """One status line on ``stream``: rewritten in place on a terminal; otherwise a plain line at most
    every ``interval`` seconds (and on :meth:`done`)."""

    def __init__(self, stream: TextIO, prefix: str = "", interval: float = 10.0) -> None:
        self._stream = stream
        self._prefix = prefix
        self._tty = stream.isatty()
        self._interval = interval
        self._last_plain: float | None = None
        self._last_text = ""  # the last line printed
        self._shown = False

    def show(self, text: str, *, force: bool = False) -> None:
        line = self._prefix + text
        if self._tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self._stream.write("\r" + line[:width] + "\x1b[K")
            self._stream.flush()
            self._shown = True
            return
        now = time.monotonic()
        due = self._last_plain is None or now - self._last_plain >= self._interval
        if line != self._last_text and (force or due):
            self._stream.write(line + "\n")
            self._stream.flush()
            self._last_plain = now
            self._last_text = line

    def done(self, text: str | None = None) -> None:
        if text is not None:
            self.show(text, force=True)
        if self._tty and self._shown:
            self._stream.write("\n")
            self._stream.flush()
        self._shown = False


def pip_progress(display: OneLine) -> Callable[[str], None]:
    """A callback for :func:`proxy.airflow.local.ensure_venv` that keeps ``display`` up to date."""
    summary = PipSummary()
    started = time.monotonic()

    def on_line(line: str) -> None:
        if summary.feed(line):
            display.show(summary.render(time.monotonic() - started))

    return on_line


def status_line(counters: CacheCounters | None, stats: VersionStats | None) -> str:
    """``cache 12 hits / 3 misses (80% hits), 40 passed through | DB 123 version polls (last 2.1 ms)``.

    Hits include 304 answers to a matching ``If-None-Match`` and stale-but-allowed answers."""
    parts = []
    if counters is not None:
        hits = counters.hits + counters.not_modified + int(getattr(counters, "stale", 0))
        lookups = hits + counters.misses
        ratio = f" ({100 * hits / lookups:.0f}% hits)" if lookups else ""
        parts.append(f"cache {hits} hits / {counters.misses} misses{ratio}, {counters.bypass} passed through")
    else:
        parts.append("cache off")
    if stats is not None:
        errors = f", {stats.poll_errors} failed" if stats.poll_errors else ""
        last = f" (last {stats.last_poll_seconds * 1000:.1f} ms)" if stats.polls else ""
        parts.append(f"DB {stats.polls} version polls{last}{errors}")
    return " | ".join(parts)

"""A one-line progress display on stderr (no dependency): rewritten in place on a terminal, one line per
phase otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._label = ""
        self._last = 0.0

    def start(self, label: str) -> None:
        self._label = label
        self._last = 0.0
        if not self._tty:
            self._write(f"[{self.done + 1}/{self.total}] {label} ...\n")

    def update(self, remaining: float, requests: int, errors: int) -> None:
        now = time.monotonic()
        if not self._tty or now - self._last < 0.25:
            return
        self._last = now
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        self._write(
            f"\r[{bar}] {self.done + 1}/{self.total} {self._label}: {max(0.0, remaining):4.1f} s left,"
            f" {requests} req, {errors} err   "
        )

    def finish(self, summary: str) -> None:
        self.done += 1
        if self._tty:
            self._write("\r" + " " * 100 + "\r")
        self._write(f"[{self.done}/{self.total}] {self._label}: {summary}\n")

    def note(self, text: str) -> None:
        if self._tty:
            self._write("\r" + " " * 100 + "\r")
        self._write(f"{text}\n")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

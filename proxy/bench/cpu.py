"""CPU time of a process tree from ``/proc`` (Linux): the upstream's CPU while a phase runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[int, int, int]:
    """``(pid, ppid, utime + stime + cutime + cstime in clock ticks)`` from one ``/proc/PID/stat`` line."""
    pid = int(text[: text.index(" ")])
    fields = text[text.rindex(")") + 2 :].split()
    # After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return pid, int(fields[1]), sum(int(f) for f in fields[11:15])


def _snapshot(proc: Path) -> dict[int, tuple[int, int]]:
    table: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid, ppid, ticks = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        table[pid] = (ppid, ticks)
    return table


def tree_ticks(table: dict[int, tuple[int, int]], roots: Iterable[int]) -> int:
    """Clock ticks of ``roots`` and all their descendants in a ``{pid: (ppid, ticks)}`` table."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [r for r in roots if r in table]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return sum(table[pid][1] for pid in seen)


def descendants(roots: Iterable[int], proc: Path = Path("/proc")) -> list[int]:
    """``roots`` and every live descendant."""
    table = _snapshot(proc)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    stack = [r for r in roots if r in table]
    while stack:
        pid = stack.pop()
        if pid not in out:
            out.append(pid)
            stack.extend(children.get(pid, ()))
    return out


class CpuMeter:
    """CPU seconds used so far by the process trees rooted at ``pids`` (children included)."""

    def __init__(self, pids: Iterable[int], proc: Path = Path("/proc")) -> None:
        self.pids = list(pids)
        self._proc = proc

    def check(self) -> str | None:
        """Why it cannot measure, or None."""
        missing = [p for p in self.pids if not (self._proc / str(p) / "stat").exists()]
        return f"no such process: {', '.join(map(str, missing))}" if missing else None

    def seconds(self) -> float:
        return tree_ticks(_snapshot(self._proc), self.pids) / _TICKS

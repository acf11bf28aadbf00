"""The demo's directory: where it is, what was set up in it already (``demo.json``), and its lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proxy.demo import DemoError

DEFAULT_DIR = Path("~/.cache/dagcache/demo")
DEFAULT_DIR_AIRFLOW2 = Path("~/.cache/dagcache/demo-airflow2")
"""The default directory of ``dagcache demo --airflow 2`` (:mod:`proxy.demo.flavor`)."""
_DEFAULT_NAMES = {DEFAULT_DIR: "dagcache_demo", DEFAULT_DIR_AIRFLOW2: "dagcache_demo_airflow2"}
STATE = "demo.json"
LOCK = "demo.lock"


def resolve_dir(directory: Path) -> Path:
    return directory.expanduser().resolve()


def instance_name(directory: Path) -> str:
    """``dagcache_demo`` for the default directory (``dagcache_demo_airflow2`` for ``--airflow 2``'s),
    ``dagcache_demo_<hash>`` for any other: two demo directories never share a PostgreSQL database or Redis keys."""
    for default, name in _DEFAULT_NAMES.items():
        if directory == resolve_dir(default):
            return name
    return "dagcache_demo_" + hashlib.sha256(str(directory).encode()).hexdigest()[:8]


def is_demo_dir(directory: Path) -> bool:
    """Whether ``directory`` may be used (and removed) by the demo: it holds ``demo.json``, or nothing
    but the lock file."""
    return (directory / STATE).exists() or all(p.name == LOCK for p in directory.iterdir())


def load_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DemoError(f"{directory / STATE} is unreadable ({exc}); remove the demo with --clean") from None
    return state if isinstance(state, dict) else {}


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``demo.json`` atomically, readable by this user only (it holds the login and secrets)."""
    path = directory / STATE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold ``demo.lock`` (with this pid inside); :class:`DemoError` if another demo holds it."""
    with open(directory / LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "?"
            raise DemoError(f"a demo is running from {directory} (pid {pid}); stop it first") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

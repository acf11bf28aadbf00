"""What differs between the Airflow 3 demo (the default) and ``dagcache demo --airflow 2``. Pure.

Both bring up the same stack; the Airflow 2 one runs ``airflow webserver`` with 4 gunicorn workers (each
keeps its own DagBag, which is what makes Airflow 2 worth caching: AIRFLOW2-FACTS.md §1) and FAB users,
and dagcache serves it with the ``airflow2`` profile. Each major has its own default directory, so that the
two demos never meet; a directory made for one major refuses the other with a message saying what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from proxy.airflow.examples import BIG_DAG_ID
from proxy.airflow.local import AIRFLOW_VERSIONS
from proxy.demo.workdir import DEFAULT_DIR, DEFAULT_DIR_AIRFLOW2, resolve_dir


@dataclass(frozen=True)
class Flavor:
    """One Airflow major version as the demo runs it."""

    major: int
    server: str
    """What Airflow calls its server: ``api-server`` (3) or ``webserver`` (2); also its log's name."""
    workers: int
    """The server's worker processes."""
    profile: str
    """dagcache's ``[upstream] profile``: Airflow 3 keeps ``auto`` (as before); Airflow 2 is forced, so that no
    request before the first version poll is classified by the Airflow 3 table."""
    big_dag_path: str
    """``big_dag``'s page in this major's UI."""
    default_dir: Path

    @property
    def version(self) -> str:
        return AIRFLOW_VERSIONS[self.major]

    @property
    def log_name(self) -> str:
        return f"{self.server}.log"


FLAVORS: Final = {
    3: Flavor(3, "api-server", 1, "auto", f"/dags/{BIG_DAG_ID}", DEFAULT_DIR),
    2: Flavor(2, "webserver", 4, "airflow2", f"/dags/{BIG_DAG_ID}/grid", DEFAULT_DIR_AIRFLOW2),
}
DEFAULT_MAJOR: Final = 3


def choices() -> str:
    """``2 (Airflow 2.11.2) or 3 (Airflow 3.3.2)``."""
    return " or ".join(f"{major} (Airflow {FLAVORS[major].version})" for major in sorted(FLAVORS))


def parse_major(text: str | None) -> Flavor:
    """The flavor of ``--airflow TEXT`` (``None``: the default); ``ValueError`` with the one-line reason."""
    if text is None:
        return FLAVORS[DEFAULT_MAJOR]
    value = text.strip()
    if value.isdigit() and int(value) in FLAVORS:
        return FLAVORS[int(value)]
    raise ValueError(f"--airflow {text}: not supported; choose {choices()}")


def held_major(state: dict[str, Any]) -> int | None:
    """The Airflow major of the demo a directory's ``demo.json`` describes (``None``: nothing set up yet)."""
    version = state.get("airflow")
    if not isinstance(version, str):
        return None
    head = version.partition(".")[0]
    return int(head) if head.isdigit() else None


def directory_conflict(directory: Path, state: dict[str, Any], flavor: Flavor) -> str | None:
    """Why ``directory`` (whose ``demo.json`` is ``state``) cannot run ``flavor``'s demo, or ``None`` if it can."""
    held = state.get("airflow")
    if held is None or held == flavor.version:
        return None
    major = held_major(state)
    if major is not None and major != flavor.major and major in FLAVORS:
        return (
            f"{directory} holds an Airflow {held} demo, not Airflow {flavor.version}: run it with --airflow {major}, "
            f"choose another --dir, or remove it with `dagcache demo --dir {directory} --clean`"
        )
    return f"{directory} holds an Airflow {held} demo; remove it with `dagcache demo --dir {directory} --clean` first"


def clean_targets(directory: str | None, airflow: str | None) -> list[Path]:
    """The directories ``--clean`` removes: ``--dir``'s; else the default directory of ``--airflow``; else (neither
    given) both default directories, so that a plain ``dagcache demo --clean`` removes everything the demo made."""
    if directory is not None:
        return [Path(directory)]
    if airflow is not None:
        return [parse_major(airflow).default_dir]
    return [FLAVORS[major].default_dir for major in sorted(FLAVORS, reverse=True)]


def clean_command(flavor: Flavor, directory: Path) -> str:
    """The command that removes the demo in ``directory`` (resolved), for the banner and the goodbye line."""
    if directory != resolve_dir(flavor.default_dir):
        return f"dagcache demo --dir {directory} --clean"
    if flavor.major == DEFAULT_MAJOR:
        return "dagcache demo --clean"
    return f"dagcache demo --airflow {flavor.major} --clean"

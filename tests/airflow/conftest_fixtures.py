"""Session-scoped pytest fixtures that start a real Airflow 3 or Airflow 2.

Load them with ``pytest_plugins = ["tests.airflow.conftest_fixtures"]`` in the top-level
``tests/conftest.py``, which must also provide ``postgres_admin_url``: a session-scoped
fixture returning a ``postgresql://...`` URL of a role that may create databases.
``$DAGCACHE_TEST_DATABASE_URL``, when set, takes precedence over that fixture.

Nothing here skips: when Airflow cannot be installed or started, the fixture errors with
the output that says why. The first use installs Airflow into its own venv (~35 s per
major version; cached under ``$DAGCACHE_AIRFLOW_VENVS`` or ``~/.cache/dagcache``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.harness import AirflowInstance


@pytest.fixture(scope="session")
def airflow_admin_db_url(request: pytest.FixtureRequest) -> str:
    """``$DAGCACHE_TEST_DATABASE_URL`` if set, else the ``postgres_admin_url`` fixture's URL.

    For tests that build their own :class:`AirflowInstance` (e.g. ``serve=False``)."""
    from_env = os.environ.get("DAGCACHE_TEST_DATABASE_URL")
    if from_env:
        return from_env
    url = request.getfixturevalue("postgres_admin_url")
    assert isinstance(url, str), f"postgres_admin_url must be a str, got {url!r}"
    return url


def _airflow(
    major: int, admin_db_url: str, tmp_path_factory: pytest.TempPathFactory, workers: int = 2
) -> Iterator[AirflowInstance]:
    home: Path = tmp_path_factory.mktemp(f"airflow{major}")
    # min_serialized_dag_update_interval=0: a DAG changed by a test is written at once, not after 30 s.
    with AirflowInstance(major, admin_db_url, home, workers=workers, min_serialized_dag_update_interval=0) as instance:
        yield instance


@pytest.fixture(scope="session")
def airflow3(airflow_admin_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A running Airflow 3.3 api-server (2 workers) with ``small_000``..``small_009`` and ``big_dag``."""
    yield from _airflow(3, airflow_admin_db_url, tmp_path_factory)


@pytest.fixture(scope="session")
def airflow2(airflow_admin_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A running Airflow 2.11 webserver (4 gunicorn workers, each with its own DagBag: AIRFLOW2-FACTS.md §1) with
    ``small_000``..``small_009`` and ``big_dag``."""
    yield from _airflow(2, airflow_admin_db_url, tmp_path_factory, workers=4)

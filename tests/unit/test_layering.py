"""Import rules: cache/ knows nothing of proxy/, aiohttp, Airflow or SQL; pure modules do no I/O imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PURE = [
    "proxy/correlation.py",
    "proxy/accessline.py",
    "proxy/forwarding.py",
    "proxy/limits.py",
    "proxy/errors.py",
    "proxy/config.py",
    "proxy/routes.py",
    "proxy/requests.py",
    "proxy/scope.py",
    "proxy/policy.py",
    "proxy/airflow/routes2.py",
    "proxy/airflow/routes3.py",
    "proxy/airflow/auth2.py",
    "proxy/demo/flavor.py",
    "proxy/airflow/snapshot.py",
    "proxy/versions/model.py",
    "proxy/versions/codec.py",
    "proxy/versions/render.py",
    "proxy/negotiate.py",
    "cache/errors.py",
]
IO_LIBS = {"aiohttp", "redis", "sqlalchemy", "asyncpg", "yarl", "multidict"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "cache").rglob("*.py")))
def test_cache_package_imports_no_proxy_or_airflow(path: str):
    assert not _imports(REPO / path) & {"proxy", "aiohttp", "airflow", "sqlalchemy"}


@pytest.mark.parametrize("path", PURE)
def test_pure_modules_import_no_io_library(path: str):
    assert not _imports(REPO / path) & IO_LIBS


@pytest.mark.parametrize(
    "module",
    sorted(
        p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        for pkg in ("proxy", "cache")
        for p in (REPO / pkg).rglob("*.py")
        if p.name != "__main__.py"
    ),
)
def test_each_module_imports_alone_without_warnings(module: str):
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr

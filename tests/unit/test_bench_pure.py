"""The bench's decision modules stay pure: no network, DB or process libraries."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.unit.test_layering import IO_LIBS, _imports

PURE = ["stats", "mix", "mix2", "report", "nginxconf", "audit", "audit2"]


@pytest.mark.parametrize("name", PURE)
def test_pure_bench_modules_import_no_io_library(name: str):
    imported = _imports(REPO / "proxy" / "bench" / f"{name}.py")
    assert not imported & (IO_LIBS | {"subprocess", "socket", "matplotlib"})

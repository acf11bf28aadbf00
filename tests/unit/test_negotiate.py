"""Choosing the precompressed variant a client accepts (RFC 9110 §12.5.3)."""

from __future__ import annotations

import pytest

from cache import CachedResponse
from proxy.negotiate import accepted_codings, choose

ENTRY = CachedResponse(200, (), b"x" * 1000, b"gz", b"b", '"e"', 0.0, "k")
NO_BR = CachedResponse(200, (), b"x" * 1000, b"gz", None, '"e"', 0.0, "k")


@pytest.mark.parametrize(
    ("header", "entry", "expected"),
    [
        (None, ENTRY, None),
        ("", ENTRY, None),
        ("identity", ENTRY, None),
        ("gzip", ENTRY, "gzip"),
        ("gzip, br", ENTRY, "br"),  # equal preference: the smaller body
        ("br;q=0.5, gzip", ENTRY, "gzip"),
        ("gzip;q=0, br;q=0", ENTRY, None),
        ("*", ENTRY, "br"),
        ("*;q=0.1, gzip;q=0.9", ENTRY, "gzip"),
        ("br", NO_BR, None),
        ("GZIP", ENTRY, "gzip"),
        ("gzip;q=bogus", ENTRY, None),
    ],
)
def test_choose(header, entry, expected):
    body, coding = choose(entry, header)
    assert coding == expected
    assert body == {None: entry.body, "gzip": entry.gzip, "br": entry.br}[coding]


def test_accepted_codings_clamps_quality():
    assert accepted_codings("gzip;q=2, br;q=-1") == {"gzip": 1.0, "br": 0.0}

"""proxy.hitwire: the bytes of a lane answer (the functional tests compare them with aiohttp's)."""

from __future__ import annotations

from proxy.hitwire import serialize_head, serialize_tail
from tests.conftest import REPO
from tests.unit.test_layering import IO_LIBS, _imports


def test_head_is_the_status_line_the_headers_in_order_then_the_length():
    head = serialize_head(200, [("ETag", '"e"'), ("X-Cache", "HIT"), ("Content-Type", "application/json")], 12)
    assert head == (
        b'HTTP/1.1 200 OK\r\nETag: "e"\r\nX-Cache: HIT\r\nContent-Type: application/json\r\nContent-Length: 12\r\n'
    )


def test_a_304_has_no_length():
    assert serialize_head(304, [("ETag", '"e"')], None) == b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n'


def test_line_breaks_nul_or_an_unknown_status_leave_it_to_aiohttp():
    assert serialize_head(200, [("X", "a\r\nSet-Cookie: x")], 1) is None
    assert serialize_head(200, [("X\n", "a")], 1) is None
    assert serialize_head(200, [("X", "a\x00")], 1) is None
    assert serialize_head(799, [], 0) is None


def test_non_ascii_values_are_utf8_as_aiohttp_writes_them():
    assert serialize_head(200, [("Content-Language", "dé")], 0) == (
        b"HTTP/1.1 200 OK\r\nContent-Language: d\xc3\xa9\r\nContent-Length: 0\r\n"
    )


def test_tail_ends_the_header_block():
    assert serialize_tail("Sat, 05 Dec 2026 20:38:45 GMT", "Python/3.11 aiohttp/3.14.5") == (
        b"Date: Sat, 05 Dec 2026 20:38:45 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n"
    )


def test_hitwire_is_pure():
    assert not _imports(REPO / "proxy" / "hitwire.py") & IO_LIBS

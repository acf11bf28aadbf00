"""The bytes of a hit, for the hit lane (:mod:`proxy.hitlane`). Pure.

A lane answer is written as ``head + tail + body``: ``head`` is the status line and every header up to and
including ``Content-Length`` (built once per entry, encoding and version map), ``tail`` the ``Date`` and
``Server`` headers and the blank line (rebuilt once a second). That is the layout aiohttp writes for the same
``web.Response`` on a keep-alive HTTP/1.1 GET: the response's headers in order, then ``Content-Length`` (none
on a 304), ``Date``, ``Server``; a test compares the two paths byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus


@dataclass(frozen=True, slots=True)
class LaneAnswer:
    """One answer of the hit lane and what telemetry and the access log need to know about it."""

    head: bytes  # status line and headers through Content-Length, each line ending in CRLF
    body: bytes  # b"" for a 304
    status: int
    route: str  # the route's name: the metrics' ``route`` label
    outcome: str  # the metrics' ``outcome`` label: "HIT" or "304"
    etag: str  # logged as the entry's ``key``


def serialize_head(status: int, headers: Iterable[tuple[str, str]], content_length: int | None) -> bytes | None:
    """``HTTP/1.1 <status> <reason>`` and ``headers`` (then ``Content-Length`` unless None) as sent; None if a
    name or value holds a line break or NUL (aiohttp refuses to send those; the lane leaves it to aiohttp)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        return None
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        if _unsafe(name) or _unsafe(value):
            return None
        lines.append(f"{name}: {value}")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def serialize_tail(date: str, server: str) -> bytes:
    """``Date``, ``Server`` and the blank line that ends the header block."""
    return f"Date: {date}\r\nServer: {server}\r\n\r\n".encode()


def _unsafe(text: str) -> bool:
    return "\r" in text or "\n" in text or "\x00" in text

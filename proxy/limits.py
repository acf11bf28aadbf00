"""Pure request-size rules; each returns the rejection the client gets, or ``None``.

aiohttp's parser enforces the URL length and the size of each header line itself (mapped to
414/431 in :mod:`proxy.server`); the totals below need the parsed request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.errors import RequestRejected


@dataclass(frozen=True, slots=True)
class Limits:
    max_url_length: int
    max_header_size: int
    max_header_count: int
    max_body_size: int  # 0: unlimited


def check_request(
    limits: Limits, *, raw_path: str, headers: Sequence[tuple[str, str]], content_length: int | None
) -> RequestRejected | None:
    """The first limit that the request exceeds, as a rejection; ``None`` if it is within all."""
    if len(raw_path) > limits.max_url_length:
        return url_too_long(limits.max_url_length)
    if len(headers) > limits.max_header_count:
        return headers_too_large(f"more than {limits.max_header_count} header fields")
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > limits.max_header_size:
        return headers_too_large(f"{size} bytes of headers, the limit is {limits.max_header_size}")
    if content_length is not None and limits.max_body_size and content_length > limits.max_body_size:
        return body_too_large(limits.max_body_size)
    return None


def url_too_long(limit: int) -> RequestRejected:
    return RequestRejected(414, "uri_too_long", f"the request target is longer than {limit} bytes")


def headers_too_large(detail: str) -> RequestRejected:
    return RequestRejected(431, "request_header_fields_too_large", detail)


def body_too_large(limit: int) -> RequestRejected:
    return RequestRejected(413, "content_too_large", f"the request body is larger than {limit} bytes")


def malformed(detail: str) -> RequestRejected:
    return RequestRejected(400, "bad_request", detail)

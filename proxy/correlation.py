"""Correlation ids a client sends, read for the access log (pure functions; nothing here changes a request).

* ``X-Request-Id`` (ingress-nginx sets it, so do Envoy, Heroku, most load balancers): logged as ``request_id``
  when it is 1 to 128 characters from a safe set (letters, digits and ``-_.:;=/+@``: UUIDs, nginx's 32 hex
  characters, ``Root=1-...`` AWS trace ids). Anything else is not logged at all rather than cut: a shortened
  id correlates with nothing, and a value with spaces, quotes or control characters could forge log fields
  in the text format.
* W3C ``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header): its ``trace-id`` and
  ``parent-id`` (the caller's span, logged as ``span_id``) when the header is present exactly once and valid
  (lower-case hex, version not ``ff``, version ``00`` exactly 55 characters, neither id all zeros).

Both headers are forwarded to Airflow untouched (:mod:`proxy.forwarding`); dagcache adds neither.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_REQUEST_ID = 128

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:;=/+@-]+")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def request_id(value: str | None) -> str | None:
    """The client's ``X-Request-Id`` if it is safe to log as it is, else ``None``."""
    if value is None or len(value) > MAX_REQUEST_ID or _REQUEST_ID.fullmatch(value) is None:
        return None
    return value


def trace_ids(values: Sequence[str]) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` from the request's ``traceparent`` header values, or ``None`` if not valid."""
    if len(values) != 1:
        return None  # absent, or repeated: the spec treats more than one traceparent as invalid
    value = values[0]
    found = _TRACEPARENT.match(value)
    if found is None:
        return None
    version, trace_id, span_id = found.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None  # version 00 has exactly four fields; a later version may append "-..." fields
    return trace_id, span_id

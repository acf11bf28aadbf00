"""Request targets: what the upstream will see, in one canonical form per resource. Pure.

The upstream (uvicorn + Starlette) percent-decodes the whole path once, routes on the decoded path and parses
the query with ``parse_qsl(keep_blank_values=True)``. So two targets name the same resource exactly when their
decoded path segments and their decoded query pairs are equal; the cache keys on that, never on raw bytes:
``/api/v2/dags/%61bc`` and ``/api/v2/dags/abc``, ``%3a`` and ``%3A`` and ``:``, ``+`` and ``%20`` in a query
share a key; ``+`` and ``%20`` in a *path* do not (only the query decodes ``+``).

Whatever could be read two ways is **rejected**, and a :class:`Reject` means "pass through, do not cache"
(never an error response; the upstream answers such requests as it likes):

* a target that is not origin-form (``/...``), or holds a character outside RFC 3986's ``pchar``/query set
  (controls, space, non-ASCII, ``#``, ``\\``, ...), or a ``%`` not followed by two hex digits;
* a decoded segment that is empty (``//``, a trailing ``/``), ``.`` or ``..``, or holds ``/`` or ``\\``
  (``%2F``/``%5C``: Starlette would see a separator the client did not send), or a control character (NUL...);
* bytes that are not UTF-8, in the path or the query;
* a path outside the configured base path;
* a query that ``parse_qsl(strict_parsing=True)`` refuses (``a&b``, ``&&``), or with more than
  :data:`MAX_QUERY_FIELDS` fields;
* a path that matches no route, or a query parameter the route does not know (once or repeated).

Canonical query order: a *stable* sort by name only. Values of one name keep their order and duplicates,
because order can be meaning (``order_by``, ``run_ids``; and for a scalar parameter the upstream takes the
last value).

:func:`canonical_bytes` is the hashed form: every field is length-prefixed, so no crafted value (one holding
``&``, ``=``, a separator byte, ...) can make two different targets encode alike.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes

from proxy.routes import Route, RouteTable

#: Upper bound on query fields; a longer query passes through (``parse_qsl`` raises).
MAX_QUERY_FIELDS = 256

_FORMAT = b"dcq1"
_ESCAPE = r"%[0-9A-Fa-f]{2}"
_PATH_CHARS = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|{_ESCAPE})*")
_QUERY_CHARS = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|{_ESCAPE})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RejectReason(enum.Enum):
    NOT_ORIGIN_FORM = "not_origin_form"
    BAD_CHARACTER = "bad_character"
    NOT_UTF8 = "not_utf8"
    CONTROL_CHARACTER = "control_character"
    EMPTY_SEGMENT = "empty_segment"
    DOT_SEGMENT = "dot_segment"
    ENCODED_SLASH = "encoded_slash"
    OUTSIDE_BASE = "outside_base"
    BAD_QUERY = "bad_query"
    NO_ROUTE = "no_route"
    UNKNOWN_PARAM = "unknown_param"


@dataclass(frozen=True, slots=True)
class Reject:
    """Pass the request through untouched; ``reason`` is for logs and metrics."""

    reason: RejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """A decoded target, base path stripped: ``path`` is ``"/" + "/".join(segments)``."""

    path: str
    segments: tuple[str, ...]
    query: tuple[tuple[str, str], ...]  # in request order


@dataclass(frozen=True, slots=True)
class NormalizedTarget:
    """A target that matched a route with known parameters only, in canonical form."""

    profile: str  # of the route table
    route: Route
    path_params: Mapping[str, str]
    path: str
    segments: tuple[str, ...]
    query: tuple[tuple[str, str], ...]  # canonical order: stable sort by name
    canonical: bytes  # canonical_bytes(route.name, segments, query)
    digest: str  # sha256 hex of ``canonical``

    def values(self, name: str) -> tuple[str, ...]:
        """Every value of query parameter ``name``, in request order."""
        return tuple(value for key, value in self.query if key == name)


def split_target(raw_path: str, base_path: str = "") -> Target | Reject:
    """Decode ``raw_path`` (path and query as received) the way the upstream will, or reject it."""
    if not raw_path.startswith("/"):
        return Reject(RejectReason.NOT_ORIGIN_FORM)
    path_raw, mark, query_raw = raw_path.partition("?")
    if not _PATH_CHARS.fullmatch(path_raw) or (mark and not _QUERY_CHARS.fullmatch(query_raw)):
        return Reject(RejectReason.BAD_CHARACTER)
    segments: list[str] = []
    for raw in path_raw[1:].split("/") if path_raw != "/" else ():
        if not raw:
            return Reject(RejectReason.EMPTY_SEGMENT)
        segment = raw
        if "%" in raw:  # only an escape can bring a non-ASCII byte, a separator or a control character
            try:
                segment = unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                return Reject(RejectReason.NOT_UTF8)
            if "/" in segment or "\\" in segment:
                return Reject(RejectReason.ENCODED_SLASH)
            if _CONTROL.search(segment):
                return Reject(RejectReason.CONTROL_CHARACTER)
        if segment in (".", ".."):
            return Reject(RejectReason.DOT_SEGMENT)
        segments.append(segment)
    base = base_path.strip("/").split("/") if base_path.strip("/") else []
    if segments[: len(base)] != base:
        return Reject(RejectReason.OUTSIDE_BASE)
    del segments[: len(base)]
    if not query_raw:
        return Target("/" + "/".join(segments), tuple(segments), ())
    try:
        query = parse_qsl(
            query_raw, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS
        )
    except UnicodeDecodeError:
        return Reject(RejectReason.NOT_UTF8)
    except ValueError as exc:
        return Reject(RejectReason.BAD_QUERY, str(exc)[:100])
    if "%" in query_raw and any(_CONTROL.search(key) or _CONTROL.search(value) for key, value in query):
        return Reject(RejectReason.CONTROL_CHARACTER)
    return Target("/" + "/".join(segments), tuple(segments), tuple(query))


def normalize_target(raw_path: str, base_path: str, table: RouteTable) -> NormalizedTarget | Reject:
    """The canonical form of a request for a route of ``table``, or why it must pass through."""
    target = split_target(raw_path, base_path)
    if isinstance(target, Reject):
        return target
    found = table.classify(target.path)
    if found is None:
        return Reject(RejectReason.NO_ROUTE)
    route = found.route
    unknown = sorted({key for key, _ in target.query if key not in route.params})
    if unknown:
        return Reject(RejectReason.UNKNOWN_PARAM, ",".join(unknown)[:100])
    query = tuple(sorted(target.query, key=_name))  # stable: per name, request order and duplicates kept
    canonical = canonical_bytes(route.name, target.segments, query)
    return NormalizedTarget(
        profile=table.profile,
        route=route,
        path_params=found.path_params,
        path=target.path,
        segments=target.segments,
        query=query,
        canonical=canonical,
        digest=hashlib.sha256(canonical).hexdigest(),
    )


def _name(pair: tuple[str, str]) -> str:
    return pair[0]


def canonical_bytes(route: str, segments: Sequence[str], query: Sequence[tuple[str, str]]) -> bytes:
    """``dcq1`` + route + segment count + segments + pair count + (name, value) pairs, each string
    length-prefixed (4 bytes, big-endian, of its UTF-8): decoding it back is unambiguous, so it is injective."""
    out = [_FORMAT, _field(route), struct.pack(">I", len(segments))]
    out.extend(_field(segment) for segment in segments)
    out.append(struct.pack(">I", len(query)))
    for key, value in query:
        out.append(_field(key))
        out.append(_field(value))
    return b"".join(out)


def _field(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data

"""A cached response and its stored form.

Stored bytes (format ``dcache1``)::

    b"dcache1\\n" + header + b"\\n" + body + gzip + br

``header`` is compact ASCII JSON (so it holds no raw newline) with exactly the fields ``status``,
``headers``, ``etag``, ``stored_at``, ``key`` and ``parts`` = ``[len(body), len(gzip) | null, len(br) | null]``;
the body parts follow as raw bytes, back to back. There is no pickle and nothing is evaluated: :func:`decode`
checks the tag, every field's type and that the part lengths add up to exactly the bytes that follow, and
raises :class:`~cache.errors.CorruptEntry` otherwise (a reader treats that as a miss). A new layout gets a
new tag, so a deploy never needs a flush.

Compressed variants are deterministic: the gzip member is written by hand with a zero mtime, no file name and
OS byte 255 ("unknown"), so every process on every platform with the same zlib produces the same bytes.
Brotli is used only if the optional ``brotli`` module is importable.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
import zlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cache.errors import CorruptEntry

FORMAT_TAG = b"dcache1\n"
_FIELDS = frozenset({"status", "headers", "etag", "stored_at", "key", "parts"})
# Rough per-entry cost of the Python objects around the byte strings (dataclass, tuples, dict slot).
_OVERHEAD = 400

try:
    _brotli: ModuleType | None = importlib.import_module("brotli")
except ImportError:  # optional: without it entries simply carry no br variant
    _brotli = None

BROTLI_AVAILABLE = _brotli is not None


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """An immutable response as stored: identity body plus optional precompressed variants.

    ``headers`` holds only the response headers worth replaying (e.g. ``content-type``), never hop-by-hop,
    encoding or length headers: the server derives those from the variant it sends. ``key`` is the rendered
    cache key the entry was stored under (checked on read), ``etag`` the strong validator derived from it.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    gzip: bytes | None
    br: bytes | None
    etag: str
    stored_at: float
    key: str

    @classmethod
    def create(
        cls,
        *,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        key: str,
        etag: str,
        stored_at: float,
        level: int = 6,
        min_compress_size: int = 256,
    ) -> CachedResponse:
        """An entry with its variants computed; a variant that is not smaller than the body is left out."""
        gz: bytes | None = None
        br: bytes | None = None
        if len(body) >= min_compress_size:
            gz, br = compress_variants(body, level=level)
            gz = gz if len(gz) < len(body) else None
            br = br if br is not None and len(br) < len(body) else None
        return cls(status, headers, body, gz, br, etag, stored_at, key)


def gzip_deterministic(body: bytes, level: int = 6) -> bytes:
    """A single gzip member of ``body``: identical bytes in every process (mtime 0, no name, OS unknown)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(body) + compressor.flush()
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((xfl, 255))
    return header + deflated + struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)


def compress_variants(body: bytes, *, level: int = 6, br_quality: int = 5) -> tuple[bytes, bytes | None]:
    """``(gzip, br)`` of ``body``; ``br`` is ``None`` when the ``brotli`` module is not installed."""
    gz = gzip_deterministic(body, level)
    if _brotli is None:
        return gz, None
    br: bytes = _brotli.compress(body, quality=br_quality)
    return gz, br


def size(entry: CachedResponse) -> int:
    """Approximate memory held by ``entry`` in bytes (byte strings plus a fixed object overhead)."""
    total = _OVERHEAD + len(entry.body) + len(entry.etag) + len(entry.key)
    if entry.gzip is not None:
        total += len(entry.gzip)
    if entry.br is not None:
        total += len(entry.br)
    for name, value in entry.headers:
        total += len(name) + len(value) + 64
    return total


def encode(entry: CachedResponse) -> bytes:
    """The stored form of ``entry`` (see the module docstring)."""
    header = {
        "status": entry.status,
        "headers": [list(pair) for pair in entry.headers],
        "etag": entry.etag,
        "stored_at": entry.stored_at,
        "key": entry.key,
        "parts": [len(entry.body), _len(entry.gzip), _len(entry.br)],
    }
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")
    return b"".join((FORMAT_TAG, text, b"\n", entry.body, entry.gzip or b"", entry.br or b""))


def decode(raw: bytes, *, key: str | None = None) -> CachedResponse:
    """Parse stored bytes; with ``key``, also require that the entry was stored under that key.

    Raises :class:`CorruptEntry` for an unknown tag, a bad header, truncated or trailing data, or another key.
    """
    if not raw.startswith(FORMAT_TAG):
        raise CorruptEntry(f"unknown entry format {bytes(raw[:8])!r}")
    end = raw.find(b"\n", len(FORMAT_TAG))
    if end < 0:
        raise CorruptEntry("entry header is not terminated")
    try:
        header = json.loads(raw[len(FORMAT_TAG) : end])
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptEntry(f"entry header is not JSON: {exc}") from exc
    status, headers, etag, stored_at, stored_key, parts = _check_header(header)
    if key is not None and stored_key != key:
        raise CorruptEntry(f"entry was stored under {stored_key!r}, read as {key!r}")
    body_len, gzip_len, br_len = parts
    start = end + 1
    if len(raw) - start != body_len + (gzip_len or 0) + (br_len or 0):
        raise CorruptEntry(f"entry holds {len(raw) - start} body bytes, its header announces other lengths")
    body = raw[start : start + body_len]
    start += body_len
    gz = None if gzip_len is None else raw[start : start + gzip_len]
    start += gzip_len or 0
    br = None if br_len is None else raw[start : start + br_len]
    return CachedResponse(status, headers, body, gz, br, etag, stored_at, stored_key)


def _len(part: bytes | None) -> int | None:
    return None if part is None else len(part)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header(
    header: Any,
) -> tuple[int, tuple[tuple[str, str], ...], str, float, str, tuple[int, int | None, int | None]]:
    if not isinstance(header, dict) or header.keys() != _FIELDS:
        raise CorruptEntry("entry header does not have the expected fields")
    status, etag, stored_at, key = header["status"], header["etag"], header["stored_at"], header["key"]
    if not _is_int(status) or not 100 <= status <= 599:
        raise CorruptEntry(f"bad status {status!r}")
    if not isinstance(etag, str) or not isinstance(key, str):
        raise CorruptEntry("etag and key must be strings")
    if not (_is_int(stored_at) or isinstance(stored_at, float)) or not math.isfinite(stored_at):
        raise CorruptEntry(f"bad stored_at {stored_at!r}")
    raw_headers = header["headers"]
    if not isinstance(raw_headers, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair) for pair in raw_headers
    ):
        raise CorruptEntry("headers must be a list of [name, value] string pairs")
    parts = header["parts"]
    if not (
        isinstance(parts, list)
        and len(parts) == 3
        and _is_int(parts[0])
        and all(p is None or _is_int(p) for p in parts[1:])
        and all(p is None or p >= 0 for p in parts)
    ):
        raise CorruptEntry(f"bad part lengths {parts!r}")
    pairs = tuple((name, value) for name, value in raw_headers)
    return status, pairs, etag, float(stored_at), key, (parts[0], parts[1], parts[2])

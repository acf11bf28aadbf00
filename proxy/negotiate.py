"""Content negotiation for cached entries (RFC 9110 §12.5.3). Pure.

Entries hold the identity body plus precompressed gzip and (if brotli is installed) br variants, so a hit
never compresses: it picks the smallest variant the client accepts. Nothing is ever compressed twice: the
upstream is asked for identity bodies on fills.
"""

from __future__ import annotations

from cache import CachedResponse


def accepted_codings(header: str | None) -> dict[str, float]:
    """``{"gzip": 1.0, "br": 0.5, ...}`` from an ``Accept-Encoding`` header (lower-cased codings)."""
    result: dict[str, float] = {}
    if not header:
        return result
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        result[coding] = max(0.0, min(1.0, quality))
    return result


def choose(entry: CachedResponse, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """``(body, content-encoding or None)`` of the best variant of ``entry`` for this client."""
    accepted = accepted_codings(accept_encoding)
    wildcard = accepted.get("*", 0.0)

    def quality(coding: str) -> float:
        return accepted.get(coding, wildcard)

    candidates: list[tuple[float, int, bytes, str | None]] = []
    if entry.br is not None and quality("br") > 0:
        candidates.append((quality("br"), -len(entry.br), entry.br, "br"))
    if entry.gzip is not None and quality("gzip") > 0:
        candidates.append((quality("gzip"), -len(entry.gzip), entry.gzip, "gzip"))
    if not candidates:
        return entry.body, None
    best = max(candidates, key=lambda c: (c[0], c[1]))
    return best[2], best[3]

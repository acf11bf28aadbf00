"""Pure forwarding rules: which headers cross the proxy, which are added, where the request goes.

No I/O here; :mod:`proxy.upstream` applies these rules to real requests.

Rules (RFC 9110 §7.6, and what Airflow deployments rely on):

* Hop-by-hop headers are dropped in both directions: ``Connection`` and every header it names,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``. The proxy
  frames each leg itself (``Content-Length`` is kept; chunking is redone per leg).
* ``X-Forwarded-For/Proto/Host/Port`` (and ``-Prefix`` when a base path is stripped) describe the
  client's hop. Inbound forwarded headers (including RFC 7239 ``Forwarded``) are believed only from
  peers in ``server.trusted_proxies`` — like uvicorn's ``FORWARDED_ALLOW_IPS`` — and otherwise
  replaced, so a client cannot spoof its address or flip the scheme Airflow uses for redirects.
* ``Host`` is passed on unchanged (``preserve``) or set to the upstream's (``upstream``).
* ``Set-Cookie``, ``Location`` and status codes are never rewritten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Headers = Sequence[tuple[str, str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: The header that asks dagcache to skip its cache (honoured only with the admin token; see proxy.caching).
BYPASS_HEADER = "X-Dagcache-Bypass"

#: Request headers the proxy answers itself and never forwards (the bypass header carries the admin token:
#: Airflow must never see it).
_CONSUMED_REQUEST = frozenset({"expect", BYPASS_HEADER.lower()})

_FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix")


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop fields and without any field that ``Connection`` names."""
    items = list(headers)
    named = {
        token.strip().lower()
        for name, value in items
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return [(n, v) for n, v in items if (low := n.lower()) not in HOP_BY_HOP and low not in named]


def is_trusted(peer: str | None, trusted: tuple[Network, ...] | Literal["*"]) -> bool:
    """Whether forwarded headers from ``peer`` (an IP address string) are believed."""
    if trusted == "*":
        return True
    if not peer or not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


@dataclass(frozen=True, slots=True)
class ClientHop:
    """What the proxy knows about the connection a request arrived on."""

    peer: str | None
    scheme: str
    local_port: int | None
    trusted: bool


def request_headers(
    headers: Headers,
    hop: ClientHop,
    *,
    host_mode: Literal["preserve", "upstream"],
    upstream_netloc: str,
    prefix: str = "",
) -> list[tuple[str, str]]:
    """The headers to send upstream for a client request with ``headers``."""
    kept: list[tuple[str, str]] = []
    inbound: dict[str, str] = {}
    host = ""
    for name, value in strip_hop_by_hop(headers):
        low = name.lower()
        if low in _CONSUMED_REQUEST:
            continue
        if low == "host":
            host = value
            continue
        if low in _FORWARDED:
            if hop.trusted:
                # Repeated fields are one comma-separated list (RFC 9110 §5.3).
                inbound[low] = f"{inbound[low]}, {value}" if low in inbound else value
            continue
        if low == "forwarded" and not hop.trusted:
            continue
        kept.append((name, value))

    kept.append(("Host", host if host_mode == "preserve" and host else upstream_netloc))
    chain = inbound.get("x-forwarded-for")
    peer = hop.peer or "unknown"
    kept.append(("X-Forwarded-For", f"{chain}, {peer}" if chain else peer))
    kept.append(("X-Forwarded-Proto", inbound.get("x-forwarded-proto", hop.scheme)))
    if host or "x-forwarded-host" in inbound:
        kept.append(("X-Forwarded-Host", inbound.get("x-forwarded-host", host)))
    port = inbound.get("x-forwarded-port") or _port_of(host) or (str(hop.local_port) if hop.local_port else "")
    if port:
        kept.append(("X-Forwarded-Port", port))
    forwarded_prefix = inbound.get("x-forwarded-prefix", "") + prefix
    if forwarded_prefix:
        kept.append(("X-Forwarded-Prefix", forwarded_prefix))
    return kept


def _port_of(host: str) -> str:
    if host.startswith("["):
        _, _, rest = host.partition("]")
        return rest[1:] if rest.startswith(":") else ""
    _, sep, port = host.rpartition(":")
    return port if sep and port.isdigit() else ""


def response_headers(headers: Headers) -> list[tuple[str, str]]:
    """The upstream's response headers as the client receives them (order and repeats kept)."""
    return strip_hop_by_hop(headers)


def upstream_target(raw_path: str, *, base_path: str, strip_base_path: bool, upstream_path: str) -> tuple[str, str]:
    """``(path_and_query, stripped_prefix)`` for the upstream request.

    ``raw_path`` is the request target as received (path plus query, still percent-encoded); it is
    never decoded or re-encoded, so the upstream sees exactly what the client sent. With
    ``strip_base_path`` the base path is removed and reported as the ``X-Forwarded-Prefix``; the
    upstream URL's own path, if any, is prepended.
    """
    prefix = ""
    if strip_base_path and base_path and _under(raw_path, base_path):
        raw_path = raw_path[len(base_path) :] or "/"
        if raw_path.startswith("?"):
            raw_path = "/" + raw_path
        prefix = base_path
    return upstream_path + raw_path, prefix


def _under(raw_path: str, base_path: str) -> bool:
    if not raw_path.startswith(base_path):
        return False
    rest = raw_path[len(base_path) :]
    return rest == "" or rest[0] in "/?"

"""``[redis] url``: which Redis topology it names and where its nodes are. Pure: no I/O, no redis-py.

Accepted forms (``[user[:password]@]`` is optional everywhere, percent-encoded)::

    redis://host[:port][/db]                       one server (also ?query options redis-py understands)
    rediss://host[:port][/db]                      the same over TLS
    unix:///path/to/redis.sock[?db=N]              a local socket
    redis+sentinel://host[:port][,host[:port]...]/service_name[/db]
    rediss+sentinel://...                          Sentinel; TLS to the sentinels and the master
    redis+cluster://host[:port][,host[:port]...]   Redis Cluster (seed nodes; database 0 only)
    rediss+cluster://...                           the same over TLS

Default ports: 6379 for servers and cluster nodes, 26379 for sentinels. The password in a Sentinel URL is the
master's (and its replicas'); the sentinels themselves are contacted without one.

:func:`parse_redis_url` raises :class:`RedisUrlError`, which is both a :class:`~proxy.errors.ConfigError`
(exit 2) and a ``ValueError`` (so pydantic reports it against ``[redis] url``). Messages never contain the
password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from proxy.errors import ConfigError

Topology = Literal["standalone", "sentinel", "cluster"]

SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORT = 6379
SENTINEL_PORT = 26379
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


class RedisUrlError(ConfigError, ValueError):
    """``[redis] url`` is not one of the accepted forms; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A parsed ``[redis] url``. ``nodes`` are the sentinels or the cluster seeds (empty for standalone,
    which redis-py reads from ``url`` itself)."""

    topology: Topology
    url: str
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    def describe(self) -> str:
        """Safe to log: topology and nodes, no credentials."""
        if self.topology == "standalone":
            return "standalone"
        nodes = ",".join(_render(host, port) for host, port in self.nodes)
        if self.topology == "sentinel":
            return f"sentinel {self.service_name} via {nodes} (db {self.db})"
        return f"cluster via {nodes}"


def parse_redis_url(url: str) -> RedisUrl:
    """Validate ``url`` and split it into its parts."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise RedisUrlError(
            "must be empty (embedded store) or a redis://, rediss://, unix://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster:// URL"
        )
    topology, tls = SCHEMES[scheme]
    if topology == "standalone":
        return _parse_standalone(url, scheme, tls)
    if "?" in rest or "#" in rest:
        raise RedisUrlError(f"a {scheme}:// URL takes no query string or fragment")
    netloc, _, path = rest.partition("/")
    username, password, hosts = _split_userinfo(netloc)
    default_port = SENTINEL_PORT if topology == "sentinel" else DEFAULT_PORT
    nodes = tuple(_parse_node(item, default_port, scheme) for item in hosts.split(","))
    if topology == "cluster":
        if path not in ("", "0"):
            raise RedisUrlError("a Redis Cluster has only database 0: write redis+cluster://host:port[,host:port...]")
        return RedisUrl("cluster", url, tls, nodes, username=username, password=password)
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash
    if not parts or not parts[0] or len(parts) > 2:
        raise RedisUrlError(
            f"a {scheme}:// URL needs the master's service name: {scheme}://host:port[,host:port...]/service_name[/db]"
        )
    service = unquote(parts[0])
    db = _parse_db(parts[1]) if len(parts) == 2 else 0
    return RedisUrl("sentinel", url, tls, nodes, service, db, username, password)


def _parse_standalone(url: str, scheme: str, tls: bool) -> RedisUrl:
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path.startswith("/"):
            raise RedisUrlError("a unix:// URL needs an absolute socket path: unix:///path/to/redis.sock")
        return RedisUrl("standalone", url, tls=False)
    _, _, hosts = _split_userinfo(parts.netloc)
    if "," in hosts:
        raise RedisUrlError(
            f"a {scheme}:// URL names one server; for several use redis+sentinel:// or redis+cluster://"
        )
    _parse_node(hosts, DEFAULT_PORT, scheme)
    path = parts.path.strip("/")
    db = _parse_db(path) if path else 0
    return RedisUrl("standalone", url, tls=tls, db=db)


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None), hosts


def _parse_node(text: str, default_port: int, scheme: str) -> tuple[str, int]:
    if not text:
        raise RedisUrlError(f"a {scheme}:// URL needs a host (an empty host in the list?)")
    if text.startswith("["):  # [IPv6]:port
        host, bracket, tail = text[1:].partition("]")
        if not bracket or not host or (tail and not tail.startswith(":")):
            raise RedisUrlError(f"bad IPv6 address {text!r}: write [address]:port")
        port_text = tail[1:]
    else:
        host, _, port_text = text.partition(":")
        if not _HOST.match(host):
            raise RedisUrlError(f"bad host {host!r} in a {scheme}:// URL")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise RedisUrlError(f"bad port {port_text!r} for host {host!r}: must be a number from 1 to 65535")
    return host, int(port_text)


def _parse_db(text: str) -> int:
    if not text.isdigit():
        raise RedisUrlError(f"bad database number {text!r}: must be a non-negative integer")
    return int(text)


def _render(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""Exceptions of the ``proxy`` package.

The tree, rooted at :class:`ProxyError`::

    ProxyError
    ├── ConfigError              bad configuration; startup stops with exit code 2
    ├── RequestRejected          a client request the proxy refuses (400/413/414/431)
    ├── VersionLookupError       the metadata DB could not be read; versions keep their last values
    │   └── NotAnAirflowDatabase the configured database has no Airflow schema
    └── UpstreamError            the upstream could not answer → 502
        ├── UpstreamUnavailable  connect refused/reset, DNS, TLS (also ConnectionError)
        └── UpstreamTimeout      connect or read timeout → 504 (also TimeoutError)

Lower-layer errors (``aiohttp.ClientError``, ``asyncio.TimeoutError``) are mapped at the boundary
in :mod:`proxy.upstream` and re-raised ``from`` the original. ``cache/`` has its own root,
``cache.CacheError``, and never raises these.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error raised by the ``proxy`` package."""


class ConfigError(ProxyError):
    """The configuration file, an environment override or a command-line value is invalid.

    ``str(exc)`` is the complete message for the operator: it names the key, the bad value
    (redacted when secret) and what is allowed.
    """


class RequestRejected(ProxyError):
    """A client request that the proxy refuses before it reaches the upstream."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class VersionLookupError(ProxyError):
    """Reading Airflow's metadata DB failed (unreachable, timed out, unexpected schema)."""


class NotAnAirflowDatabase(VersionLookupError):
    """The configured database has neither Airflow 2 nor Airflow 3 tables."""


class UpstreamError(ProxyError):
    """The upstream did not produce a response."""

    status = 502
    error = "upstream_error"


class UpstreamUnavailable(UpstreamError, ConnectionError):
    """The upstream could not be reached or closed the connection before answering."""

    status = 502
    error = "upstream_unavailable"


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The upstream did not connect or answer within the configured timeout."""

    status = 504
    error = "upstream_timeout"

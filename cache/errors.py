"""Exceptions of the ``cache`` package::

CacheError
├── CacheUnavailable   the backend is down or timed out (callers pass the request through)
└── CorruptEntry       a stored value has an unknown format or cannot be decoded (read as a miss)
"""

from __future__ import annotations


class CacheError(Exception):
    """Root of every error raised by the ``cache`` package."""


class CacheUnavailable(CacheError, ConnectionError):
    """The store could not be reached or did not answer in time."""


class CorruptEntry(CacheError, ValueError):
    """A stored value is not in a format this version reads."""

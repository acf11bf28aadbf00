"""Content-addressed cache keys. Pure.

A key names one rendering of one view: the versions it depends on are part of the key, so the entry stored
under it never changes, and a new version simply produces a new key (old ones expire by TTL)::

    {namespace}:e1:{route}:{{namespace}:{dag}}:{name}={int},{name}={int}:{scope}:{digest}

Every free-form part is percent-encoded (UTF-8, everything but ``A-Z a-z 0-9 _ . - ~``), so a part can
never contain ``:``, ``{``, ``}``, ``,``, ``=``, a space or a non-ASCII character: the rendering is
printable ASCII and injective (two different keys never render alike). The ``{namespace:dag}`` part is a
Redis Cluster hash tag (the first ``{`` of the key opens it), so all of one DAG's keys, and their locks,
live in one slot. ``e1`` is the key layout's version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import quote

KEY_LAYOUT = "e1"
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")  # exactly what quote() leaves alone


def _part(text: str) -> str:
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The parts of a key. ``versions`` is a tuple of ``(name, version)``, kept sorted by name.

    ``dag`` is ``""`` for views that belong to no DAG; ``scope`` is the digest of who may see the entry and
    ``digest`` the digest of the normalized request (path parameters, sorted known query parameters).
    """

    namespace: str
    route: str
    dag: str
    versions: tuple[tuple[str, int], ...]
    scope: str
    digest: str
    _rendered: str = field(init=False, repr=False, compare=False)
    _etag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate version name in {self.versions!r}")
        for name, value in self.versions:
            if type(value) is not int:  # also rejects bool
                raise TypeError(f"version {name!r} must be an int, not {value!r}")
        object.__setattr__(self, "versions", tuple(sorted(self.versions)))
        namespace = _part(self.namespace)
        versions = ",".join(f"{_part(name)}={value}" for name, value in self.versions)
        rendered = (
            f"{namespace}:{KEY_LAYOUT}:{_part(self.route)}:{{{namespace}:{_part(self.dag)}}}:"
            f"{versions}:{_part(self.scope)}:{_part(self.digest)}"
        )
        object.__setattr__(self, "_rendered", rendered)
        object.__setattr__(self, "_etag", '"' + hashlib.sha256(rendered.encode("ascii")).hexdigest()[:32] + '"')

    def render(self) -> str:
        """The key as stored: printable ASCII, no spaces, one Redis Cluster slot per (namespace, DAG).

        Computed once, at construction, like :meth:`etag`.
        """
        return self._rendered

    def etag(self) -> str:
        """A strong ETag for the entry stored under this key: it changes exactly when the key does."""
        return self._etag

"""Route tables: which GET routes are cached, what each depends on, which query parameters it accepts.

A table is data (one module per Airflow major version, :mod:`proxy.airflow.routes3`, ...); this module holds
the types and the pure matcher. A request that matches no route, uses a method other than GET/HEAD, or
carries a query parameter the route does not know passes through untouched.

Patterns are absolute paths relative to the upstream's root, made of whole segments. A segment is

* a literal (``dags``, ``~``): equal to the request's (decoded) segment;
* ``{name}``: any one non-empty segment;
* ``{name:int}``: a segment of ASCII digits with an optional leading ``-`` (``map_index`` is ``-1`` for an
  unmapped task instance). Use it where the handler types the path parameter ``int``: without it,
  ``.../{task_id}/{map_index}`` would also take ``.../{task_id}/xcomEntries``, which Airflow routes elsewhere.

:func:`classify` is the specification: the first route of the table, in order, whose pattern matches.
:meth:`RouteTable.classify` is what the hit path uses: a segment trie that returns exactly the same match
(it collects every route that matches and keeps the one that comes first in the table), without trying
each route's regex in turn.

Query parameters: the key keeps them in a canonical order that is a stable sort by *name* only
(:mod:`proxy.requests`): repeated values keep their relative order and duplicates, because for some
parameters order is meaning (``order_by`` is a multi-key sort, ``run_ids`` is the order of the streamed
lines). For set-like filters (``state=a&state=b``) this only costs a second key for the other order.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

_INT = re.compile(r"-?[0-9]+")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)(:int)?\}")


class Kind(enum.Enum):
    """What a view depends on, hence which versions go into its key."""

    DEFINITION = "definition"  # the DAG's definition only
    STATE = "state"  # definition + runs and task instances
    GLOBAL = "global"  # the set of DAGs and their list fields
    PASS = "pass"  # never cached


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One cacheable (or explicitly passed) GET route of an upstream profile. Compared by identity."""

    name: str  # stable, low-cardinality label for keys and metrics, e.g. "api.dag.tasks"
    pattern: str  # path template relative to the base path, e.g. "/api/v2/dags/{dag_id}/tasks"
    kind: Kind
    params: frozenset[str] = frozenset()  # accepted query parameters; any other one -> pass through
    dag_from: str | None = "dag_id"  # path or query parameter that names the DAG (None: global view)
    per_user: bool = False  # the body depends on the user (favorites, ...): never shared across a role
    vary: tuple[str, ...] = ()  # request headers (lower-case) that change the body (become part of the key)
    #: param -> the only values (compared lower-cased) under which ``kind`` holds; any other value -> pass.
    #: An absent parameter is fine (the handler's default is one of the allowed values).
    pass_unless: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: the body depends on the runs of *every* readable DAG (GLOBAL only): the key also carries the map's
    #: ``generation``, which moves on every change of any DAG.
    all_dag_states: bool = False
    #: the body is computed from the wall clock (a running run's duration, planned runs after now). Its age is
    #: bounded by the DAG's state version, which advances at least once per ``versions.state_max_age``.
    uses_clock: bool = False
    #: the upstream marks the response ``Cache-Control: no-store`` and (UI views) re-sets the session cookie on
    #: every answer (Airflow 2): the cache stores it anyway, without the cookie, keyed by that credential's
    #: scope, and passes the refreshed cookie only to the client whose request went upstream.
    session_bound: bool = False
    note: str = ""  # why it is classified so (from Airflow's handler code)
    #: per segment of the pattern: (literal, None, False) or (None, param name, typed int)
    segments: tuple[tuple[str | None, str | None, bool], ...] = field(init=False, repr=False)
    path_params: frozenset[str] = field(init=False, repr=False)
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise ValueError(f"route {self.name}: pattern must start with '/'")
        segments: list[tuple[str | None, str | None, bool]] = []
        regex: list[str] = []
        for text in self.pattern[1:].split("/"):
            param = _PARAM.fullmatch(text)
            if param is not None:
                segments.append((None, param[1], param[2] is not None))
                regex.append(f"(?P<{param[1]}>{_INT.pattern if param[2] else '[^/]+'})")
            elif not text or "{" in text or "}" in text:
                raise ValueError(f"route {self.name}: bad segment {text!r} (params must be whole segments)")
            else:
                segments.append((text, None, False))
                regex.append(re.escape(text))
        names = [name for _, name, _ in segments if name is not None]
        if len(names) != len(set(names)):
            raise ValueError(f"route {self.name}: repeated path parameter")
        if not set(self.pass_unless) <= self.params:
            raise ValueError(f"route {self.name}: pass_unless names an unknown query parameter")
        if self.all_dag_states and self.kind is not Kind.GLOBAL:
            raise ValueError(f"route {self.name}: all_dag_states is for GLOBAL routes")
        object.__setattr__(self, "pass_unless", MappingProxyType(dict(self.pass_unless)))
        object.__setattr__(self, "segments", tuple(segments))
        object.__setattr__(self, "path_params", frozenset(names))
        object.__setattr__(self, "_regex", re.compile("/" + "/".join(regex)))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters if ``path`` (decoded, base path stripped) matches the whole pattern."""
        found = self._regex.fullmatch(path)
        return None if found is None else found.groupdict()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    path_params: Mapping[str, str]


def classify(table: Sequence[Route], path: str) -> RouteMatch | None:
    """Specification: the first route of ``table`` whose pattern matches the (normalized, decoded) ``path``."""
    for route in table:
        params = route.match(path)
        if params is not None:
            return RouteMatch(route, params)
    return None


class _Node:
    __slots__ = ("any", "end", "integer", "literals")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.any: _Node | None = None
        self.integer: _Node | None = None
        self.end: int | None = None  # smallest table index of a route ending here


class RouteTable:
    """A profile's routes, in order, indexed for :meth:`classify`."""

    def __init__(self, profile: str, routes: Sequence[Route]) -> None:
        self.profile = profile
        self.routes: tuple[Route, ...] = tuple(routes)
        self.by_name: Mapping[str, Route] = MappingProxyType({route.name: route for route in self.routes})
        if len(self.by_name) != len(self.routes):
            raise ValueError(f"profile {profile}: route names are not unique")
        self._root = _Node()
        for index, route in enumerate(self.routes):
            node = self._root
            for literal, _, integer in route.segments:
                if literal is not None:
                    node = node.literals.setdefault(literal, _Node())
                elif integer:
                    node.integer = node.integer or _Node()
                    node = node.integer
                else:
                    node.any = node.any or _Node()
                    node = node.any
            if node.end is None:  # a later route of the same shape is shadowed: the first one wins
                node.end = index

    def classify(self, path: str) -> RouteMatch | None:
        """Same result as :func:`classify` over :attr:`routes`, found through the segment trie."""
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        index = _walk(self._root, parts, 0)
        if index is None:
            return None
        route = self.routes[index]
        return RouteMatch(route, {name: parts[i] for i, (_, name, _) in enumerate(route.segments) if name is not None})

    def scan(self, path: str) -> RouteMatch | None:
        """The linear reference (:func:`classify`); for tests and tools, not the hit path."""
        return classify(self.routes, path)


def _walk(node: _Node, parts: list[str], i: int) -> int | None:
    """The smallest index of a route whose segments match ``parts[i:]`` below ``node``."""
    if i == len(parts):
        return node.end
    part = parts[i]
    best: int | None = None
    child = node.literals.get(part)
    if child is not None:
        best = _walk(child, parts, i + 1)
    if part:
        for child in (node.integer if node.integer is not None and _INT.fullmatch(part) else None, node.any):
            if child is not None:
                found = _walk(child, parts, i + 1)
                if found is not None and (best is None or found < best):
                    best = found
    return best

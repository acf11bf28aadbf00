"""Route tables: which GET routes are cached, what each depends on, which query parameters it accepts.

A table is data (one module per Airflow major version, :mod:`proxy.airflow.routes3`, ...); this module holds
the types and the pure matcher. A request that matches no route, uses a method other than GET/HEAD, or
carries a query parameter the route does not know passes through untouched.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """What a view depends on, hence which versions go into its key."""

    DEFINITION = "definition"  # the DAG's definition only
    STATE = "state"  # definition + runs and task instances
    GLOBAL = "global"  # the set of DAGs and their list fields
    PASS = "pass"  # never cached


@dataclass(frozen=True, slots=True)
class Route:
    """One cacheable (or explicitly passed) GET route of an upstream profile."""

    name: str  # stable, low-cardinality label for keys and metrics, e.g. "api.dag.tasks"
    pattern: str  # path template relative to the base path, e.g. "/api/v2/dags/{dag_id}/tasks"
    kind: Kind
    params: frozenset[str] = frozenset()  # accepted query parameters; any other one -> pass through
    dag_from: str | None = "dag_id"  # path or query parameter that names the DAG (None: global view)
    per_user: bool = False  # the body depends on the user (favorites, ...): never shared across a role
    vary: tuple[str, ...] = ()  # request headers that change the body (become part of the key)
    note: str = ""  # why it is classified so (from Airflow's handler code)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{[a-z_]+\})", self.pattern)
        regex = "".join(
            f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") and part.endswith("}") else re.escape(part)
            for part in parts
        )
        object.__setattr__(self, "_regex", re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self._regex.match(path)
        return None if found is None else found.groupdict()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    path_params: Mapping[str, str]


def classify(table: Sequence[Route], path: str) -> RouteMatch | None:
    """The first route of ``table`` whose pattern matches the (already normalized, decoded) ``path``."""
    for route in table:
        params = route.match(path)
        if params is not None:
            return RouteMatch(route, params)
    return None

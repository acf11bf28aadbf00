"""The cache's decisions: may this request be served from the cache, under which key; may this response be
stored; which DAGs did this write change. Pure: the handler does the I/O around these three functions.

:func:`decide` — a request is :class:`Cacheable` only if every step below holds, checked in this order
(the first failing one is the :class:`PassThrough` reason):

1. the method is GET. Not HEAD: Airflow's FastAPI routes answer HEAD with 405 (``APIRoute`` does not add
   HEAD as Starlette's ``Route`` does), so a cached 200 would differ from what the upstream says;
2. the target normalized (:func:`proxy.requests.normalize_target`): a route, known parameters only;
3. the route's kind is not PASS, and each ``pass_unless`` parameter has only allowed values;
4. a DAG view names exactly one DAG (path parameter, or one value of the ``dag_from`` query parameter);
5. the version map is held and fresh (``now - polled_at <= max_version_age``), else STALE_VERSIONS — unless
   ``serve_stale``: then a held map that is too old still gives a key, flagged ``stale`` (the caller may
   answer it from a stored entry, never fill it);
6. the DAG is in the map (else the upstream answers, typically 404);
7. the request has a scope (:func:`proxy.scope.scope_for`).

The key (:class:`KeyParts`): schema revision, profile, route, DAG, the versions the kind depends on —
DEFINITION ``definition``; STATE ``definition`` + ``state``; GLOBAL ``global`` (+ ``generation`` when the
route has ``all_dag_states``) — the values of the route's ``vary`` headers, the target's canonical digest
and the scope: the role digest when the token was verified in role mode and the route is not ``per_user``,
else the credential digest. Per-user views (favorites) are thus never shared across a role.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from proxy.requests import NormalizedTarget, Reject, RejectReason
from proxy.routes import Kind, Route
from proxy.scope import PassReason, Scope
from proxy.versions.model import VersionMap, fresh

_KEY_FORMAT = b"dck1"


class Reason(enum.Enum):
    METHOD = "method"
    PASS_ROUTE = "pass_route"
    PARAM_VALUE = "param_value"
    NO_DAG = "no_dag"
    STALE_VERSIONS = "stale_versions"
    UNKNOWN_DAG = "unknown_dag"


@dataclass(frozen=True, slots=True)
class PassThrough:
    reason: Reason | RejectReason | PassReason


@dataclass(frozen=True, slots=True)
class KeyParts:
    """Everything a cache key is made of; equal parts before and after a fill = the fill may be stored."""

    schema: str
    profile: str
    route: str
    dag_id: str  # "" for a global view
    versions: tuple[tuple[str, int], ...]
    vary: tuple[tuple[str, str | None], ...]  # header -> its values joined by ", " (None: absent)
    target_digest: str
    scope: str

    @property
    def digest(self) -> str:
        """sha256 (hex) over every part but the versions, length-prefixed: a CacheKey's ``digest``."""
        fields = [self.schema, self.profile, self.route, self.dag_id, self.target_digest, self.scope]
        for name, value in self.vary:
            fields += [name, "\x00absent" if value is None else "=" + value]
        data = _KEY_FORMAT + b"".join(_field(text) for text in fields)
        return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Cacheable:
    route: Route
    dag_id: str | None
    key_parts: KeyParts
    generation: int  # of the map the key was derived from (for X-Dagcache-Generation)
    stale: bool = False  # the map is older than max_version_age (only with serve_stale): serve stored, never fill


def decide(
    method: str,
    target: NormalizedTarget | Reject,
    scope: Scope | PassReason,
    versions: VersionMap | None,
    now: float,
    *,
    headers: Iterable[tuple[str, str]] = (),
    max_version_age: float,
    serve_stale: bool = False,
) -> PassThrough | Cacheable:
    """Whether a request may be answered from the cache, and under which key (see the module doc)."""
    if method != "GET":
        return PassThrough(Reason.METHOD)
    if isinstance(target, Reject):
        return PassThrough(target.reason)
    route = target.route
    if route.kind is Kind.PASS:
        return PassThrough(Reason.PASS_ROUTE)
    for name, allowed in route.pass_unless.items():
        if any(value.lower() not in allowed for value in target.values(name)):
            return PassThrough(Reason.PARAM_VALUE)
    dag_id: str | None = None
    if route.dag_from is not None:
        dag_id = target.path_params.get(route.dag_from)
        if dag_id is None:
            named = target.values(route.dag_from)
            dag_id = named[0] if len(named) == 1 and named[0] else None
        if dag_id is None:
            return PassThrough(Reason.NO_DAG)
    if versions is None:
        return PassThrough(Reason.STALE_VERSIONS)
    stale = not fresh(versions, now, max_version_age)
    if stale and not serve_stale:
        return PassThrough(Reason.STALE_VERSIONS)
    dag = None if dag_id is None else versions.get(dag_id)
    if dag_id is not None and dag is None:
        return PassThrough(Reason.UNKNOWN_DAG)
    if isinstance(scope, PassReason):
        return PassThrough(scope)

    if route.kind is Kind.GLOBAL:
        depends = [("global", versions.global_version)]
        if route.all_dag_states:
            depends.append(("generation", versions.generation))
    else:
        assert dag is not None
        depends = [("definition", dag.definition)]
        if route.kind is Kind.STATE:
            depends.append(("state", dag.state))
    vary = _vary(route.vary, headers) if route.vary else ()
    parts = KeyParts(
        schema=versions.schema,
        profile=target.profile,
        route=route.name,
        dag_id=dag_id or "",
        versions=tuple(depends),
        vary=vary,
        target_digest=target.digest,
        scope=scope.role if scope.role is not None and not route.per_user else scope.credential,
    )
    return Cacheable(route, dag_id, parts, versions.generation, stale)


def _vary(names: tuple[str, ...], headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str | None], ...]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        low = name.lower()
        if low in names:
            found.setdefault(low, []).append(value.strip())
    return tuple((name, ", ".join(found[name]) if name in found else None) for name in names)


def _field(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data


# ----- storing a response -----------------------------------------------------------------------------------


class NotStorable(enum.Enum):
    """Why a response is not stored. Falsy, so ``if is_storable(...):`` reads right."""

    STATUS = "status"
    CONTENT_TYPE = "content_type"
    SET_COOKIE = "set_cookie"
    CACHE_CONTROL = "cache_control"
    CONTENT_ENCODING = "content_encoding"
    VARY = "vary"
    TOO_LARGE = "too_large"

    def __bool__(self) -> bool:
        return False


_MEDIA_TYPES = frozenset({"application/json", "application/x-ndjson", "text/html"})


def is_storable(
    status: int,
    headers: Iterable[tuple[str, str]],
    body_size: int,
    max_size: int,
    *,
    keyed_headers: Collection[str] = (),
    session_bound: bool = False,
) -> Literal[True] | NotStorable:
    """Whether an upstream response may be stored: a 200 with one JSON/NDJSON/HTML ``Content-Type``, no
    ``Set-Cookie`` (a cookie is someone's session), no ``Cache-Control: no-store``/``private``, an identity
    body (the proxy asks for identity and compresses itself), no ``Vary`` beyond ``Accept-Encoding`` and
    the headers the key holds (``keyed_headers``, lower-case), and at most ``max_size`` bytes.

    ``session_bound`` (a route of the Airflow 2 profile, :attr:`proxy.routes.Route.session_bound`): the
    upstream's ``Set-Cookie`` (its session expiry refresh), ``Cache-Control: no-store``/``private`` and
    ``Vary: Cookie`` are deliberately overridden. Safe because the key's scope is that same session cookie (or
    Basic credential), validated against the metadata DB on every request (:mod:`proxy.airflow.auth2`), and
    the caller stores only ``Content-Type``/``Content-Language``, never the cookie."""
    if status != 200:
        return NotStorable.STATUS
    content_types: list[str] = []
    for name, value in headers:
        low = name.lower()
        if low == "content-type":
            content_types.append(value)
        elif low == "set-cookie":
            if not session_bound:
                return NotStorable.SET_COOKIE
        elif low == "cache-control":
            if session_bound:
                continue
            if {_token(d.partition("=")[0]) for d in value.split(",")} & {"no-store", "private"}:
                return NotStorable.CACHE_CONTROL
        elif low == "content-encoding":
            if any(_token(coding) not in ("", "identity") for coding in value.split(",")):
                return NotStorable.CONTENT_ENCODING
        elif low == "vary":
            allowed = {"accept-encoding", "", *keyed_headers, *(("cookie",) if session_bound else ())}
            if any(_token(field) not in allowed for field in value.split(",")):
                return NotStorable.VARY
    if len(content_types) != 1:
        return NotStorable.CONTENT_TYPE
    media = _token(content_types[0].partition(";")[0])
    negotiated = media == "text/plain" and "accept" in keyed_headers  # a dag source's raw variant, keyed by Accept
    if (
        media not in _MEDIA_TYPES
        and not negotiated
        and not (media.startswith("application/") and media.endswith("+json"))
    ):
        return NotStorable.CONTENT_TYPE
    if body_size > max_size:
        return NotStorable.TOO_LARGE
    return True


def _token(text: str) -> str:
    return text.strip().lower()


# ----- read-your-writes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteEffect:
    """What a successful write changed: bump ``state`` and/or the global version (``listing``) of ``dag_id``
    (``None``: every DAG in the map) at once, with :func:`proxy.versions.model.bump`."""

    dag_id: str | None
    state: bool
    listing: bool
    handler: str  # Airflow 3.3 handler, routes/public/<file>:<function>

    @property
    def all_dags(self) -> bool:
        return self.dag_id is None


_R = "/api/v2/dags/{dag_id}/dagRuns"
_T = _R + "/{dag_run_id}/taskInstances"
# (method, pattern, state, listing, handler). A pattern without {dag_id} changes DAGs named in the body (or a
# dag_id pattern): every DAG. A dag_id of "~" (bulk endpoints) also means every DAG. Not listed, hence no
# bump: reads sent as POST (dagRuns/list, taskInstances/list), dry runs (.../dry_run, and the dry_run body
# flag of clears, which bumps needlessly), and writes no cached view reads (pools, connections, variables,
# XComs, state stores, asset events and queues, backfill pause, parseDagFile: the poller sees their effects).
_WRITES: tuple[tuple[str, str, bool, bool, str], ...] = (
    ("PATCH", "/api/v2/dags", True, True, "dags.py:patch_dags"),  # is_paused of every DAG matching filters
    ("PATCH", "/api/v2/dags/{dag_id}", True, True, "dags.py:patch_dag"),  # is_paused
    ("DELETE", "/api/v2/dags/{dag_id}", True, True, "dags.py:delete_dag"),
    ("POST", "/api/v2/dags/{dag_id}/favorite", True, True, "dags.py:favorite_dag"),  # details, /ui/dags
    ("POST", "/api/v2/dags/{dag_id}/unfavorite", True, True, "dags.py:unfavorite_dag"),
    ("POST", _R, True, False, "dag_run.py:trigger_dag_run"),
    ("PATCH", _R, True, False, "dag_run.py:bulk_dag_runs"),
    ("PATCH", _R + "/{dag_run_id}", True, False, "dag_run.py:patch_dag_run"),  # state, note
    ("DELETE", _R + "/{dag_run_id}", True, False, "dag_run.py:delete_dag_run"),
    ("POST", _R + "/{dag_run_id}/clear", True, False, "dag_run.py:clear_dag_run"),
    ("POST", "/api/v2/dags/{dag_id}/clearDagRuns", True, False, "dag_run.py:clear_dag_runs"),
    ("POST", "/api/v2/dags/{dag_id}/clearPartitions", True, False, "dag_run.py:clear_dag_run_partitions"),
    ("POST", "/api/v2/dags/{dag_id}/clearTaskInstances", True, False, "task_instances.py:post_clear_task_instances"),
    ("PATCH", _T, True, False, "task_instances.py:bulk_task_instances"),
    ("PATCH", _T + "/{task_id}", True, False, "task_instances.py:patch_task_instance"),  # state, note
    ("PATCH", _T + "/{task_id}/{map_index:int}", True, False, "task_instances.py:patch_task_instance"),
    ("DELETE", _T + "/{task_id}", True, False, "task_instances.py:delete_task_instance"),
    (
        "PATCH",
        _R + "/{dag_run_id}/taskGroupInstances/{group_id}",
        True,
        False,
        "task_instances.py:patch_task_group_instances",
    ),
    ("PATCH", _T + "/{task_id}/{map_index:int}/hitlDetails", True, False, "hitl.py:update_hitl_detail"),
    ("POST", "/api/v2/backfills", True, False, "backfills.py:create_backfill"),  # runs of the body's DAG
    ("PUT", "/api/v2/backfills/{backfill_id}/cancel", True, False, "backfills.py:cancel_backfill"),  # fails runs
    ("POST", "/api/v2/assets/{asset_id}/materialize", True, False, "assets.py:materialize_asset"),  # a new run
)
_R2 = "/api/v1/dags/{dag_id}/dagRuns"
_T2 = _R2 + "/{dag_run_id}/taskInstances/{task_id}"
# Airflow 2.11's REST writes (airflow/api_connexion/endpoints/<file>:<function>). Not listed: the UI's form
# posts (/paused, /clear, /success, ...: the DAG is in the query or the body; the poller sees them), reads sent
# as POST (~/dagRuns/list, ~/dagRuns/~/taskInstances/list) and the dataset queue.
_WRITES2: tuple[tuple[str, str, bool, bool, str], ...] = (
    ("PATCH", "/api/v1/dags", True, True, "dag_endpoint.py:patch_dags"),  # is_paused of every matching DAG
    ("PATCH", "/api/v1/dags/{dag_id}", True, True, "dag_endpoint.py:patch_dag"),  # is_paused
    ("DELETE", "/api/v1/dags/{dag_id}", True, True, "dag_endpoint.py:delete_dag"),
    (
        "POST",
        "/api/v1/dags/{dag_id}/clearTaskInstances",
        True,
        False,
        "task_instance_endpoint.py:post_clear_task_instances",
    ),
    (
        "POST",
        "/api/v1/dags/{dag_id}/updateTaskInstancesState",
        True,
        False,
        "task_instance_endpoint.py:post_set_task_instances_state",
    ),
    ("POST", _R2, True, False, "dag_run_endpoint.py:post_dag_run"),
    ("PATCH", _R2 + "/{dag_run_id}", True, False, "dag_run_endpoint.py:update_dag_run_state"),
    ("DELETE", _R2 + "/{dag_run_id}", True, False, "dag_run_endpoint.py:delete_dag_run"),
    ("POST", _R2 + "/{dag_run_id}/clear", True, False, "dag_run_endpoint.py:clear_dag_run"),
    ("PATCH", _R2 + "/{dag_run_id}/setNote", True, False, "dag_run_endpoint.py:set_dag_run_note"),
    ("PATCH", _T2, True, False, "task_instance_endpoint.py:patch_task_instance"),
    ("PATCH", _T2 + "/{map_index:int}", True, False, "task_instance_endpoint.py:patch_mapped_task_instance"),
    ("PATCH", _T2 + "/setNote", True, False, "task_instance_endpoint.py:set_task_instance_note"),
    ("PATCH", _T2 + "/{map_index:int}/setNote", True, False, "task_instance_endpoint.py:set_mapped_task_instance_note"),
)
WRITES: tuple[tuple[str, Route, bool, bool], ...] = tuple(
    (method, Route(handler, pattern, Kind.PASS, dag_from=None, note=f"routes/public/{handler}"), state, listing)
    for method, pattern, state, listing, handler in _WRITES
)
WRITES2: tuple[tuple[str, Route, bool, bool], ...] = tuple(
    (
        method,
        Route(handler, pattern, Kind.PASS, dag_from=None, note=f"api_connexion/endpoints/{handler}"),
        state,
        listing,
    )
    for method, pattern, state, listing, handler in _WRITES2
)

_ALL_WRITES = (*WRITES, *WRITES2)  # Airflow 3 (/api/v2) and Airflow 2 (/api/v1): their paths never overlap


def write_effects(method: str, path: str, status: int) -> WriteEffect | None:
    """The versions a request changed, if it was a successful (2xx) write. ``path`` is the decoded path with
    the base path stripped (:func:`proxy.requests.split_target`)."""
    if not 200 <= status < 300 or method in ("GET", "HEAD", "OPTIONS"):
        return None
    for write_method, route, state, listing in _ALL_WRITES:
        if write_method == method and (params := route.match(path)) is not None:
            dag_id = params.get("dag_id")
            return WriteEffect(None if dag_id == "~" else dag_id, state, listing, route.name)
    return None

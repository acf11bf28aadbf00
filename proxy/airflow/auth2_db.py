"""What the leader reads about Airflow 2 authentication, once per poll (inside the poll's snapshot transaction).

* **Logged-in sessions**: the ``session`` rows (``AirflowDatabaseSessionInterface``, the default
  ``[webserver] session_backend = database``) that have not expired and whose data holds a ``_user_id``
  (``LIKE`` on the serialized data: Flask-Session writes JSON). Logout keeps the row and the cookie value and only
  removes ``_user_id`` from the data (AIRFLOW2-FACTS.md §3): such a row, an expired one and a deleted one all
  drop out of the set.
* **An auth fingerprint**: a digest of ``ab_user`` (id, username, password hash, active),
  ``ab_user_role`` and ``ab_permission_view_role``. A password change (only ``ab_user.password`` moves, not
  ``changed_on``), a deactivation, a role change and a change of a role's permissions (``airflow sync-perm``,
  per-DAG ``access_control``) each change it. ``last_login``/``login_count``/``fail_login_count`` are left out:
  Basic auth writes ``last_login`` on every API call.

Both travel to every proxy process in the version map's ``revoked`` mapping (which Airflow 2 has no other use
for), as :func:`proxy.airflow.auth2.encode_facts` lays them out. Session ids leave the DB only as digests.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from proxy.airflow.auth2 import encode_facts, session_key

AUTH2 = MetaData()

session = Table(
    "session",
    AUTH2,
    Column("id", Integer, primary_key=True),
    Column("session_id", String(255)),
    Column("data", LargeBinary),
    Column("expiry", DateTime),  # naive UTC
)
ab_user = Table(
    "ab_user",
    AUTH2,
    Column("id", Integer, primary_key=True),
    Column("username", String(512)),
    Column("password", String(256)),
    Column("active", Boolean),
)
ab_user_role = Table(
    "ab_user_role",
    AUTH2,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer),
    Column("role_id", Integer),
)
ab_permission_view_role = Table(
    "ab_permission_view_role",
    AUTH2,
    Column("id", Integer, primary_key=True),
    Column("permission_view_id", Integer),
    Column("role_id", Integer),
)
TABLES: tuple[Table, ...] = (session, ab_user, ab_user_role, ab_permission_view_role)

_USER_ID = re.compile(rb'"_user_id"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9]+)')


@dataclass(frozen=True, slots=True)
class AuthStatements:
    sessions: Select[Any]  # session_id, data; parameter now (naive UTC)
    users: Select[Any]
    user_roles: Select[Any]
    permissions: Select[Any]


def available(columns: dict[str, set[str]]) -> bool:
    """Whether the database has every table and column read here (name -> its columns)."""
    return all(set(table.columns.keys()) <= columns.get(table.name, set()) for table in TABLES)


def statements() -> AuthStatements:
    return AuthStatements(
        sessions=select(session.c.session_id, session.c.data).where(
            session.c.expiry > _bind_now(),
            _BytesContain(session.c.data, literal(b'%"_user_id"%', LargeBinary), literal(b'"_user_id"', LargeBinary)),
        ),
        users=select(ab_user.c.id, ab_user.c.username, ab_user.c.password, ab_user.c.active).order_by(ab_user.c.id),
        user_roles=select(ab_user_role.c.user_id, ab_user_role.c.role_id).order_by(
            ab_user_role.c.user_id, ab_user_role.c.role_id
        ),
        permissions=select(ab_permission_view_role.c.role_id, ab_permission_view_role.c.permission_view_id).order_by(
            ab_permission_view_role.c.role_id, ab_permission_view_role.c.permission_view_id
        ),
    )


def _bind_now() -> BindParameter[Any]:
    return bindparam("now", type_=DateTime)


class _BytesContain(FunctionElement[bool]):
    """``_BytesContain(column, pattern, needle)``: the bytes of ``column`` match the ``LIKE`` ``pattern`` (bytea
    LIKE bytea on PostgreSQL; MySQL compares BLOBs alike), on SQLite ``instr(column, needle) > 0``: SQLite built with
    ``SQLITE_LIKE_DOESNT_MATCH_BLOBS`` (Debian's, for one) never matches a BLOB with ``LIKE``, so no session would
    count as logged in and every session-cookie request would pass through."""

    name = "bytes_contain"
    inherit_cache = True


@compiles(_BytesContain)
def _like(element: _BytesContain, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _ = element.clauses
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(pattern, **kw)})"


@compiles(_BytesContain, "sqlite")
def _instr(element: _BytesContain, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, needle = element.clauses
    return f"(instr({compiler.process(column, **kw)}, {compiler.process(needle, **kw)}) > 0)"


def user_of(data: bytes | None) -> str | None:
    """The ``_user_id`` of a session's serialized data, as text (None: not logged in)."""
    if not data:
        return None
    found = _USER_ID.search(bytes(data))
    return None if found is None else found.group(1).decode("utf-8", "replace").strip('"')


_Parsed = tuple[bytes, str | None, str]  # data, its user, the session key


class FactsReader:
    """Reads the facts; remembers each session's parse (user id, key digest) while its data stays the same, so a
    poll costs one regex and one SHA-256 per *changed* logged-in session, not per session."""

    def __init__(self) -> None:
        self._parsed: dict[str, _Parsed] = {}

    def facts(
        self,
        sessions: Sequence[Sequence[Any]],
        users: Sequence[Sequence[Any]],
        user_roles: Sequence[Sequence[Any]],
        permissions: Sequence[Sequence[Any]],
    ) -> dict[str, float]:
        """The encoded facts (see :func:`proxy.airflow.auth2.encode_facts`) of one poll's rows."""
        digest = hashlib.blake2b(digest_size=16)
        for rows in (users, user_roles, permissions):
            digest.update(repr([tuple(row) for row in rows]).encode())
            digest.update(b"\x00")
        logged_in: dict[str, str] = {}
        parsed: dict[str, _Parsed] = {}
        for session_id, raw in sessions:
            if not session_id:
                continue
            sid, data = str(session_id), bytes(raw or b"")
            known = self._parsed.get(sid)
            if known is None or known[0] != data:
                known = (data, user_of(data), session_key(sid))
            parsed[sid] = known
            if known[1] is not None:
                logged_in[known[2]] = known[1]
        self._parsed = parsed
        return encode_facts(digest.hexdigest(), logged_in)

    async def read(self, conn: AsyncConnection, found: AuthStatements) -> dict[str, float]:
        """Read the facts in the caller's transaction (four statements)."""
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        sessions = (await conn.execute(found.sessions, {"now": now})).all()
        users = (await conn.execute(found.users)).all()
        roles = (await conn.execute(found.user_roles)).all()
        permissions = (await conn.execute(found.permissions)).all()
        return self.facts(sessions, users, roles, permissions)


def facts_from_rows(
    sessions: Sequence[Sequence[Any]],
    users: Sequence[Sequence[Any]],
    user_roles: Sequence[Sequence[Any]],
    permissions: Sequence[Sequence[Any]],
) -> dict[str, float]:
    """The facts of one set of rows, without memory of earlier polls."""
    return FactsReader().facts(sessions, users, user_roles, permissions)

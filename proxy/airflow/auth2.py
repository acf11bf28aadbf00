"""Authorization scope of the ``airflow2`` profile: whose view an Airflow 2 request may be served from.

**Which credential** — what the 2.11 webserver authenticates the request with:

* ``Authorization: Basic ...`` (``/api/v1`` with the ``basic_auth`` backend): the header value as presented;
* else the ``session`` cookie (the UI; ``/object/*`` accepts nothing else; ``/api/v1`` with the ``session``
  backend): its value ``<session id>.<signature>``;
* both at once, two ``Authorization`` headers, a ``session`` cookie given twice or spread over several
  ``Cookie`` headers: AMBIGUOUS, pass through. Any other scheme (Airflow 2 has no bearer tokens) or nothing:
  NO_CREDENTIAL, pass through.

**Scope** = ``"c:" + HMAC(secret, kind, credential, user, auth fingerprint)``. The credential as presented:
a wrong password or a forged cookie has its own scope, whose fills the upstream refuses (403, 302 to
``/login/``: never stored). A hit never reaches Airflow, so what Airflow would check on each request comes
from the metadata DB, read by the versions poller (:mod:`proxy.airflow.auth2_db`) and carried in the version
map's ``revoked`` mapping (:func:`encode_facts`):

* a session cookie is usable only while its session id is among the logged-in, unexpired sessions
  (LOGGED_OUT otherwise: logout, expiry, a deleted row), and the session's user id is part of the scope (a
  cookie whose session logs in as someone else gets a new scope);
* the auth fingerprint (users' password hashes, active flags, roles, role permissions) is part of every
  scope: a password change, a deactivation or a role change moves every credential to a new scope;
* a ``POST /logout/`` or ``POST /login/`` through this process drops that cookie at once
  (:class:`SessionAuth`), until a poll that started after it has been applied.

Hence a logged-out or expired session, a changed password, a deactivated user and a changed role stop being
served from the cache within one poll (``poll_interval``) of the DB change, at once for a logout through the
proxy. The raw credential lives only in this process's memory; Redis holds digests.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from proxy.scope import PassReason, Scope

SESSION_COOKIE = "session"
_AUTH = "a2:auth:"
_SESSION = "a2:s:"
#: a poll's transaction may have started up to this long before its result is applied
_POLL_SLACK = 2.0
_DROP_MAX = 600.0


def session_key(session_id: str) -> str:
    """How a session id is named outside the DB (a digest: the id is half of a credential)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _user_number(user: str) -> float:
    if user.isdigit() and len(user) < 15:
        return float(int(user))
    return float(-int.from_bytes(hashlib.blake2b(user.encode(), digest_size=6).digest(), "big") - 1)


def encode_facts(auth_digest: str, logged_in: Mapping[str, str]) -> dict[str, float]:
    """The facts as ``revoked``-map entries: ``a2:auth:<digest>`` -> 0 and ``a2:s:<session key>`` -> user id
    (a number; non-numeric ids as a negative 48-bit digest)."""
    facts = {_AUTH + auth_digest: 0.0}
    facts.update({_SESSION + key: _user_number(user) for key, user in logged_in.items()})
    return facts


@dataclass(frozen=True, slots=True)
class AuthFacts:
    auth: str | None  # None: the map carries no Airflow 2 facts (not polled yet, or not Airflow 2)
    sessions: Mapping[str, float]  # session key -> user number


def decode_facts(encoded: Mapping[str, float]) -> AuthFacts:
    auth: str | None = None
    sessions: dict[str, float] = {}
    for name, value in encoded.items():
        if name.startswith(_SESSION):
            sessions[name[len(_SESSION) :]] = value
        elif name.startswith(_AUTH):
            auth = name[len(_AUTH) :]
    return AuthFacts(auth, sessions)


@dataclass(frozen=True, slots=True)
class Credential2:
    kind: Literal["basic", "session"]
    value: str

    @property
    def session_id(self) -> str | None:
        """The session id of a ``session`` cookie (the part before the signature), None if unsigned."""
        if self.kind != "session":
            return None
        sid, dot, signature = self.value.rpartition(".")
        return sid if dot and sid and signature else None


def extract_credential(headers: Iterable[tuple[str, str]]) -> Credential2 | PassReason:
    authorization: list[str] = []
    cookie_headers: list[str] = []
    for name, value in headers:
        low = name.lower()
        if low == "authorization":
            authorization.append(value)
        elif low == "cookie":
            cookie_headers.append(value)
    sessions = [v for header in cookie_headers for k, v in _cookie_pairs(header) if k == SESSION_COOKIE]
    if len(authorization) > 1 or len(sessions) > 1 or (sessions and len(cookie_headers) > 1):
        return PassReason.AMBIGUOUS_CREDENTIAL
    if authorization:
        if sessions:
            return PassReason.AMBIGUOUS_CREDENTIAL
        scheme, _, param = authorization[0].strip().partition(" ")
        if scheme.lower() != "basic" or not param.strip():
            return PassReason.NO_CREDENTIAL
        return Credential2("basic", authorization[0].strip())
    if sessions and sessions[0]:
        return Credential2("session", sessions[0])
    return PassReason.NO_CREDENTIAL


def _cookie_pairs(header: str) -> Iterable[tuple[str, str]]:
    for chunk in header.split(";"):
        key, eq, value = chunk.partition("=")
        yield (key.strip(), value.strip()) if eq else ("", key.strip())


def credential_digest(credential: Credential2, secret: bytes) -> str:
    """What :class:`SessionAuth` remembers of a dropped credential (never the raw value)."""
    data = credential.kind.encode() + b"\x00" + credential.value.encode("utf-8", "surrogatepass")
    return hmac.new(secret, data, hashlib.sha256).hexdigest()[:32]


def scope2(
    headers: Iterable[tuple[str, str]],
    facts: AuthFacts,
    secret: bytes,
    *,
    dropped: Mapping[str, float] | None = None,
    polled_at: float = math.inf,
) -> Scope | PassReason:
    """The scope of an Airflow 2 request, or why it must pass through (see the module doc). ``dropped``:
    credential digest -> when this process saw it log out/in; it passes until a map polled after that."""
    credential = extract_credential(headers)
    if isinstance(credential, PassReason):
        return credential
    if facts.auth is None:
        return PassReason.NO_AUTH_FACTS
    user = ""
    if credential.kind == "session":
        sid = credential.session_id
        if sid is None:
            return PassReason.UNDECODABLE_TOKEN
        number = facts.sessions.get(session_key(sid))
        if number is None:
            return PassReason.LOGGED_OUT
        user = repr(number)
    digest = credential_digest(credential, secret)
    if dropped and (at := dropped.get(digest)) is not None and polled_at <= at + _POLL_SLACK:
        return PassReason.LOGGED_OUT
    data = "\x00".join((digest, user, facts.auth)).encode()
    scope = "c:" + hmac.new(secret, data, hashlib.sha256).hexdigest()[:32]
    return Scope(scope, None, math.inf, None, None, "basic" if credential.kind == "basic" else "cookie")


def is_session_change(method: str, path: str) -> bool:
    """``POST /logout/`` or ``POST /login/`` (FAB's auth views, with or without the trailing slash)."""
    return method == "POST" and path.rstrip("/") in ("/logout", "/login")


class SessionAuth:
    """Per process: the facts decoded once per map, and the cookies this process saw log out or in."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._source: Mapping[str, float] | None = None
        self._facts = AuthFacts(None, {})
        self._dropped: dict[str, float] = {}

    def facts(self, encoded: Mapping[str, float]) -> AuthFacts:
        if encoded is not self._source:
            self._source, self._facts = encoded, decode_facts(encoded)
        return self._facts

    def scope(
        self, headers: Iterable[tuple[str, str]], encoded: Mapping[str, float], polled_at: float
    ) -> Scope | PassReason:
        return scope2(headers, self.facts(encoded), self._secret, dropped=self._dropped or None, polled_at=polled_at)

    def observe(self, method: str, path: str, headers: Iterable[tuple[str, str]], now: float) -> bool:
        """A logout or login passing through drops the cookie it carries, at once. True if it dropped one."""
        if not is_session_change(method, path):
            return False
        credential = extract_credential(headers)
        if len(self._dropped) > 1000 or any(now - at > _DROP_MAX for at in self._dropped.values()):
            self._dropped = {k: at for k, at in self._dropped.items() if now - at <= _DROP_MAX}
        if isinstance(credential, Credential2) and credential.kind == "session":
            self._dropped[credential_digest(credential, self._secret)] = now
            return True
        return False

"""Authorization scope: whose view a request may be served from. Pure (``now`` is an argument).

**Which credential** — the one Airflow 3's ``get_user`` would use (``core_api/security.py``), or none:

* ``Authorization: Bearer <t>`` (scheme case-insensitive, token stripped) wins over the cookie;
* else the ``_token`` cookie of the ``Cookie`` header, split as Starlette's ``cookie_parser`` does;
* two ``Authorization`` headers, a ``_token`` cookie given twice or spread over several ``Cookie``
  headers (Starlette reads only the first), an empty ``Bearer`` next to a cookie: AMBIGUOUS, pass through;
* any other scheme (``Basic`` ...) or nothing: pass through, never cached.

When a bearer token and a ``_token`` cookie come together, Airflow's ``JWTRefreshMiddleware`` still
inspects the cookie and may answer with ``Set-Cookie``; so the cookie must pass the same time checks too.

**Credential scope** (default): the scope is ``HMAC-SHA256(secret, token)``. The JWT payload is decoded
*without* verifying the signature: an entry under this scope was filled by a request carrying this exact
token, which the upstream authorized; a forged token has its own scope, whose fills the upstream refuses
(401/403 are never stored). ``exp`` and ``jti`` still matter, because a hit never reaches the upstream:

* EXPIRED: ``now >= exp``; NEAR_EXPIRY: ``exp - now <= refresh_window`` (so a refreshing auth manager can
  re-issue the cookie, and so no entry outlives its token by more than the poller's lag);
* REVOKED: the ``jti`` is in the revoked map the versions poller reads from ``revoked_token``.

**Role scope** (opt-in, SimpleAuthManager-style deployments, where access is a function of role and teams):
the token is verified like Airflow's ``JWTValidator`` (HMAC ``HS512``/``HS256`` with the configured JWT
secret, ``aud``, ``exp``/``nbf``/``iat`` required, ``nbf <= now`` without leeway) and the scope also carries
``HMAC(secret, role, sorted teams)``. :mod:`proxy.policy` uses it only for routes that are not ``per_user``.

Time-independent results (the digests, the decoded claims, or why a token is unusable) are memoized per raw
token string in a bounded LRU (:class:`TokenMemo`), so a hit does one dict lookup instead of base64, JSON
and two HMACs. The raw token lives only in that in-process map: it is never logged nor stored in Redis.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import math
import re
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

COOKIE_NAME = "_token"
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_HASHES = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}


class PassReason(enum.Enum):
    NO_CREDENTIAL = "no_credential"
    AMBIGUOUS_CREDENTIAL = "ambiguous_credential"
    UNDECODABLE_TOKEN = "undecodable_token"
    EXPIRED = "expired"
    NEAR_EXPIRY = "near_expiry"
    REVOKED = "revoked"
    BAD_SIGNATURE = "bad_signature"  # role mode: not signed with the configured secret / algorithm
    BAD_CLAIMS = "bad_claims"  # role mode: audience, nbf, iat, role or teams not acceptable
    LOGGED_OUT = "logged_out"  # Airflow 2: the session is not logged in (logout, expiry), or just logged out/in
    NO_AUTH_FACTS = "no_auth_facts"  # Airflow 2: the version map carries no sessions/users facts yet


@dataclass(frozen=True, slots=True)
class RoleMode:
    """Verification settings of the role scope (Airflow's ``[api_auth] jwt_secret`` and ``jwt_audience``)."""

    jwt_secret: bytes
    audience: str = "apache-airflow"
    algorithms: frozenset[str] = frozenset({"HS512", "HS256"})


@dataclass(frozen=True, slots=True)
class Scope:
    """Who the request is. ``credential`` always; ``role`` only in role mode, for a verified token."""

    credential: str  # "c:" + HMAC of the token (hex, 128 bits)
    role: str | None  # "r:" + HMAC of (role, sorted teams)
    exp: float
    jti: str | None
    sub: str | None
    source: Literal["bearer", "cookie", "basic"]
    #: until when (epoch seconds) the same credential gets this same answer from :func:`scope_for` under the
    #: same version map: the earliest ``exp - refresh_window`` of the token and its cookie companion.
    valid_until: float = math.inf


@dataclass(frozen=True, slots=True)
class _Decoded:
    credential: str
    role: str | None
    exp: float
    nbf: float | None
    jti: str | None
    sub: str | None


class TokenMemo:
    """Bounded LRU: raw token string -> its time-independent decoding (or why it is unusable)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Decoded | PassReason] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> _Decoded | PassReason | None:
        found = self._entries.get(token)
        if found is not None:
            self._entries.move_to_end(token)
        return found

    def put(self, token: str, value: _Decoded | PassReason) -> None:
        self._entries[token] = value
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Credential:
    token: str
    source: Literal["bearer", "cookie"]
    companion: str | None = None  # the ``_token`` cookie sent along with a bearer token


def extract_credential(headers: Iterable[tuple[str, str]]) -> Credential | PassReason:
    """The token Airflow would authenticate the request with, or why there is no usable one."""
    authorization: list[str] = []
    cookies: list[str] = []
    for name, value in headers:
        low = name.lower()
        if low == "authorization":
            authorization.append(value)
        elif low == "cookie":
            cookies.append(value)
    tokens = [v for header in cookies for k, v in _cookie_pairs(header) if k == COOKIE_NAME]
    if len(tokens) > 1 or (tokens and len(cookies) > 1):
        return PassReason.AMBIGUOUS_CREDENTIAL
    cookie = tokens[0] if tokens else None
    if len(authorization) > 1:
        return PassReason.AMBIGUOUS_CREDENTIAL
    if authorization:
        scheme, _, param = authorization[0].partition(" ")
        if scheme.lower() != "bearer":
            return PassReason.NO_CREDENTIAL
        if not param.strip():
            return PassReason.AMBIGUOUS_CREDENTIAL if cookie else PassReason.NO_CREDENTIAL
        return Credential(param.strip(), "bearer", cookie)
    if cookie:
        return Credential(cookie, "cookie")
    return PassReason.NO_CREDENTIAL


def _cookie_pairs(header: str) -> Iterable[tuple[str, str]]:
    # Starlette's cookie_parser: split on ";", then on the first "=", strip both sides. A quoted value would
    # be unquoted by Starlette; we keep it quoted, which makes it an undecodable (never cached) token.
    for chunk in header.split(";"):
        key, eq, value = chunk.partition("=")
        yield (key.strip(), value.strip()) if eq else ("", key.strip())


def scope_for(
    headers: Iterable[tuple[str, str]],
    now: float,
    revoked: Mapping[str, float],
    refresh_window: float,
    secret: bytes,
    memo: TokenMemo,
    *,
    role_mode: RoleMode | None = None,
) -> Scope | PassReason:
    """The scope of a request, or why it must pass through. ``memo`` must be used with one
    (``secret``, ``role_mode``) only: it caches their results."""
    credential = extract_credential(headers)
    if isinstance(credential, PassReason):
        return credential
    decoded = _decode(credential.token, secret, role_mode, memo)
    if isinstance(decoded, PassReason):
        return decoded
    problem = _time_checks(decoded, now, revoked, refresh_window, role_mode is not None)
    valid_until = decoded.exp - refresh_window
    if problem is None and credential.companion is not None and credential.companion != credential.token:
        # The refresh middleware reads the cookie even when the bearer token authenticates the request.
        companion = _decode(credential.companion, secret, role_mode, memo)
        if isinstance(companion, PassReason):
            problem = companion
        else:
            problem = _time_checks(companion, now, revoked, refresh_window, role_mode is not None)
            valid_until = min(valid_until, companion.exp - refresh_window)
    if problem is not None:
        return problem
    return Scope(
        decoded.credential, decoded.role, decoded.exp, decoded.jti, decoded.sub, credential.source, valid_until
    )


def _time_checks(
    decoded: _Decoded, now: float, revoked: Mapping[str, float], refresh_window: float, verify_nbf: bool
) -> PassReason | None:
    if decoded.jti is not None and decoded.jti in revoked:
        return PassReason.REVOKED
    if now >= decoded.exp:
        return PassReason.EXPIRED
    if decoded.exp - now <= refresh_window:
        return PassReason.NEAR_EXPIRY
    if verify_nbf and (decoded.nbf is None or decoded.nbf > now):
        return PassReason.BAD_CLAIMS
    return None


def _decode(token: str, secret: bytes, role_mode: RoleMode | None, memo: TokenMemo) -> _Decoded | PassReason:
    cached = memo.get(token)
    if cached is None:
        cached = _decode_uncached(token, secret, role_mode)
        memo.put(token, cached)
    return cached


def _decode_uncached(token: str, secret: bytes, role_mode: RoleMode | None) -> _Decoded | PassReason:
    if len(token) > 16_384 or not _JWT.fullmatch(token):
        return PassReason.UNDECODABLE_TOKEN
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = json.loads(_b64(header_b64))
        claims = json.loads(_b64(payload_b64))
        signature = _b64(signature_b64)
    except (ValueError, binascii.Error):
        return PassReason.UNDECODABLE_TOKEN
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return PassReason.UNDECODABLE_TOKEN
    exp, jti, sub = _number(claims.get("exp")), claims.get("jti"), claims.get("sub")
    if exp is None or not isinstance(jti, str | None) or not isinstance(sub, str | None):
        return PassReason.UNDECODABLE_TOKEN
    credential = "c:" + hmac.new(secret, token.encode("ascii"), hashlib.sha256).hexdigest()[:32]
    role: str | None = None
    nbf: float | None = None
    if role_mode is not None:
        verified = _verify(header, claims, f"{header_b64}.{payload_b64}", signature, role_mode)
        if isinstance(verified, PassReason):
            return verified
        who, nbf = verified
        role = "r:" + hmac.new(secret, who, hashlib.sha256).hexdigest()[:32]
    return _Decoded(credential, role, exp, nbf, jti, sub)


def _verify(
    header: dict[str, Any], claims: dict[str, Any], signing_input: str, signature: bytes, mode: RoleMode
) -> tuple[bytes, float] | PassReason:
    """Role mode: check the token as Airflow's validator would; return the canonical (role, teams) and nbf."""
    alg = header.get("alg")
    if alg not in mode.algorithms or alg not in _HASHES:
        return PassReason.BAD_SIGNATURE
    expected = hmac.new(mode.jwt_secret, signing_input.encode("ascii"), _HASHES[alg]).digest()
    if not hmac.compare_digest(expected, signature):
        return PassReason.BAD_SIGNATURE
    aud = claims.get("aud")
    if not (aud == mode.audience or (isinstance(aud, list) and mode.audience in aud)):
        return PassReason.BAD_CLAIMS
    nbf = _number(claims.get("nbf"))
    if nbf is None or _number(claims.get("iat")) is None:
        return PassReason.BAD_CLAIMS
    role, teams = claims.get("role"), claims.get("teams")
    if not isinstance(role, str) or not (teams is None or (isinstance(teams, list) and _all_str(teams))):
        return PassReason.BAD_CLAIMS
    parts = [role] + ([] if teams is None else sorted(teams))
    count = -1 if teams is None else len(teams)  # no teams claim differs from an empty list
    return struct.pack(">i", count) + b"".join(_field(part) for part in parts), nbf


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _number(value: object) -> float | None:
    """A JSON number claim as a float; None for anything else (bool, string, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def _all_str(values: list[Any]) -> bool:
    return all(isinstance(value, str) for value in values)


def _field(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data

"""Authorization scope: which credential, whose scope, and when a token must not be served from the cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import textwrap
import time
from typing import Any

import pytest

import proxy.scope as scope_module
from proxy.scope import Credential, PassReason, RoleMode, Scope, TokenMemo, extract_credential, scope_for
from tests.airflow.harness import ensure_airflow_venv

JWT_SECRET = b"airflow-jwt-secret"
SECRET = b"dagcache-scope-secret"
NOW = 1_800_000_000.0
ROLE = RoleMode(jwt_secret=JWT_SECRET)
JTI = "5f0c4e1b2a6d4c3e9f8a7b6c5d4e3f2a"
_DROP = object()  # make_jwt(claim=_DROP) leaves the claim out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(
    secret: bytes = JWT_SECRET, alg: str = "HS512", header: dict[str, Any] | None = None, **overrides: Any
) -> str:
    """A token shaped exactly like Airflow 3's (JWTGenerator with a secret key, SimpleAuthManager user)."""
    claims: dict[str, Any] = {
        "sub": "viewer1",
        "role": "viewer",
        "teams": None,
        "jti": JTI,
        "aud": "apache-airflow",
        "nbf": int(NOW) - 60,
        "exp": int(NOW) + 86_400,
        "iat": int(NOW) - 60,
    }
    for key, value in overrides.items():
        if value is _DROP:
            claims.pop(key)
        else:
            claims[key] = value
    head = header if header is not None else {"alg": alg, "kid": "not-used", "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
    digest = {"HS512": hashlib.sha512, "HS256": hashlib.sha256}.get(alg, hashlib.sha512)
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _scope(headers: list[tuple[str, str]], **kwargs: Any) -> Scope | PassReason:
    options: dict[str, Any] = {
        "now": NOW,
        "revoked": {},
        "refresh_window": 300.0,
        "secret": SECRET,
        "memo": TokenMemo(),
    }
    options.update(kwargs)
    return scope_for(headers, **options)


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def _cookie(token: str, extra: str = "") -> list[tuple[str, str]]:
    return [("Cookie", f"session=abc; _token={token}{extra}")]


# ----- which credential ---------------------------------------------------------------------------------------


def test_credential_precedence_matches_airflow():
    a, b = make_jwt(sub="a"), make_jwt(sub="b")
    assert extract_credential(_bearer(a)) == Credential(a, "bearer")
    assert extract_credential([("authorization", f"bearer   {a}  ")]) == Credential(a, "bearer")
    assert extract_credential(_cookie(a)) == Credential(a, "cookie")
    assert extract_credential(_bearer(a) + _cookie(b)) == Credential(a, "bearer", b)
    assert extract_credential([("Cookie", f" _token = {a} ")]) == Credential(a, "cookie")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], PassReason.NO_CREDENTIAL),
        ([("Authorization", "Basic YWRtaW46YWRtaW4=")], PassReason.NO_CREDENTIAL),
        ([("Authorization", "Basic YWRtaW46YWRtaW4=")] + [("Cookie", "_token=x.y.z")], PassReason.NO_CREDENTIAL),
        ([("Authorization", "Bearer")], PassReason.NO_CREDENTIAL),
        ([("Authorization", "Bearer ")] + [("Cookie", "_token=x.y.z")], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", "session=abc; other=1")], PassReason.NO_CREDENTIAL),
        ([("Cookie", "_token=")], PassReason.NO_CREDENTIAL),
        ([("Cookie", "_token=a.b.c; _token=d.e.f")], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", "_token=a.b.c"), ("Cookie", "x=1")], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", "x=1"), ("Cookie", "_token=a.b.c")], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer a.b.c")], PassReason.AMBIGUOUS_CREDENTIAL),
    ],
)
def test_no_or_ambiguous_credential_passes(headers: list[tuple[str, str]], reason: PassReason):
    assert extract_credential(headers) is reason
    assert _scope(headers) is reason


# ----- credential scope -------------------------------------------------------------------------------------------


def test_credential_scope_is_a_keyed_digest_of_the_exact_token():
    token = make_jwt()
    found = _scope(_bearer(token))
    assert isinstance(found, Scope)
    assert found.credential == "c:" + hmac.new(SECRET, token.encode(), hashlib.sha256).hexdigest()[:32]
    assert token not in repr(found) and found.role is None
    assert (found.sub, found.jti, found.exp, found.source) == ("viewer1", JTI, NOW + 86_400, "bearer")
    via_cookie = _scope(_cookie(token))
    assert isinstance(via_cookie, Scope) and via_cookie.credential == found.credential and via_cookie.source == "cookie"
    other = _scope(_bearer(make_jwt(jti="another")))
    assert isinstance(other, Scope) and other.credential != found.credential
    other_secret = _scope(_bearer(token), secret=b"another secret")
    assert isinstance(other_secret, Scope) and other_secret.credential != found.credential


def test_credential_mode_does_not_verify_the_signature():
    # The upstream authorizes the first request of this exact token; a forged one gets its own, empty scope.
    found = _scope(_bearer(make_jwt(secret=b"not the airflow secret")))
    assert isinstance(found, Scope)


@pytest.mark.parametrize(
    ("overrides", "kwargs", "reason"),
    [
        ({"exp": int(NOW)}, {}, PassReason.EXPIRED),
        ({"exp": int(NOW) - 1}, {}, PassReason.EXPIRED),
        ({"exp": int(NOW) + 299}, {}, PassReason.NEAR_EXPIRY),
        ({"exp": int(NOW) + 300}, {}, PassReason.NEAR_EXPIRY),
        ({}, {"revoked": {JTI: NOW + 86_400}}, PassReason.REVOKED),
    ],
)
def test_expired_near_expiry_and_revoked_tokens_pass(
    overrides: dict[str, Any], kwargs: dict[str, Any], reason: PassReason
):
    assert _scope(_bearer(make_jwt(**overrides)), **kwargs) is reason
    assert _scope(_cookie(make_jwt(**overrides)), **kwargs) is reason


def test_just_outside_the_refresh_window_is_served_and_jti_is_optional():
    assert isinstance(_scope(_bearer(make_jwt(exp=int(NOW) + 301))), Scope)
    found = _scope(_bearer(make_jwt(jti=_DROP)), revoked={"x": 1.0})
    assert isinstance(found, Scope) and found.jti is None


def test_companion_cookie_must_also_be_fresh():
    # JWTRefreshMiddleware reads the cookie even when the bearer token authenticates: it may set a cookie.
    bearer = make_jwt(sub="api")
    assert isinstance(_scope(_bearer(bearer) + _cookie(make_jwt(sub="ui"))), Scope)
    assert _scope(_bearer(bearer) + _cookie(make_jwt(exp=int(NOW) + 10))) is PassReason.NEAR_EXPIRY
    assert _scope(_bearer(bearer) + _cookie(make_jwt(exp=int(NOW) - 10))) is PassReason.EXPIRED
    assert _scope(_bearer(bearer) + _cookie("garbage")) is PassReason.UNDECODABLE_TOKEN


def test_a_scope_says_until_when_it_holds():
    # The hit path reuses a decision until then: the earliest expiry minus the refresh window, companion included.
    alone = _scope(_bearer(make_jwt(exp=int(NOW) + 3600)))
    assert isinstance(alone, Scope) and alone.valid_until == NOW + 3600 - 300
    paired = _scope(_bearer(make_jwt(exp=int(NOW) + 3600)) + _cookie(make_jwt(exp=int(NOW) + 1000)))
    assert isinstance(paired, Scope) and paired.valid_until == NOW + 1000 - 300
    # ... and at that moment scope_for itself stops giving a scope.
    assert _scope(_bearer(make_jwt(exp=int(NOW) + 3600)), now=alone.valid_until) is PassReason.NEAR_EXPIRY


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c.d",
        "@@@.b.c",
        '"' + make_jwt() + '"',
        _b64(b'{"alg":"HS512"}') + ".!!!." + "sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b"[1, 2]") + ".sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b"not json") + ".sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b'{"exp": NaN}') + ".sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b'{"exp": Infinity}') + ".sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b'{"exp": 1e400}') + ".sig",
        _b64(b'{"alg":"HS512"}') + "." + _b64(b'{"exp": ' + b"9" * 400 + b"}") + ".sig",
        make_jwt(exp=_DROP),
        make_jwt(exp="1900000000"),
        make_jwt(exp=True),
        make_jwt(jti=7),
        make_jwt(sub=["a"]),
        "x" * 20_000 + ".a.b",
    ],
)
def test_undecodable_tokens_pass(token: str):
    assert _scope(_bearer(token)) is PassReason.UNDECODABLE_TOKEN


def test_memo_avoids_decoding_again_and_is_bounded(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    real = scope_module._decode_uncached

    def counting(token: str, secret: bytes, role_mode: RoleMode | None) -> Any:
        calls.append(token)
        return real(token, secret, role_mode)

    monkeypatch.setattr(scope_module, "_decode_uncached", counting)
    memo = TokenMemo(max_entries=3)
    tokens = [make_jwt(jti=f"j{i}") for i in range(4)]
    first = _scope(_bearer(tokens[0]), memo=memo)
    assert _scope(_bearer(tokens[0]), memo=memo) == first and len(calls) == 1
    assert _scope(_bearer("garbage"), memo=memo) is PassReason.UNDECODABLE_TOKEN
    assert _scope(_bearer("garbage"), memo=memo) is PassReason.UNDECODABLE_TOKEN and len(calls) == 2
    # time-dependent checks are not memoized
    assert _scope(_bearer(tokens[0]), memo=memo, now=NOW + 90_000) is PassReason.EXPIRED and len(calls) == 2
    for token in tokens[1:]:
        _scope(_bearer(token), memo=memo)
    assert len(memo) == 3
    _scope(_bearer(tokens[0]), memo=memo)  # evicted (least recently used): decoded again
    assert calls.count(tokens[0]) == 2


# ----- role scope -------------------------------------------------------------------------------------------------


def _role(token: str, **kwargs: Any) -> Scope | PassReason:
    return _scope(_bearer(token), role_mode=kwargs.pop("role_mode", ROLE), **kwargs)


def test_role_scope_is_shared_by_role_and_teams_not_by_credential():
    a = _role(make_jwt(sub="viewer1", jti="a"))
    b = _role(make_jwt(sub="viewer2", jti="b"))
    op = _role(make_jwt(sub="op1", role="op", jti="c"))
    assert isinstance(a, Scope) and isinstance(b, Scope) and isinstance(op, Scope)
    assert a.role is not None and a.role.startswith("r:") and a.role == b.role != op.role
    assert a.credential != b.credential
    t1 = _role(make_jwt(teams=["red", "blue"]))
    t2 = _role(make_jwt(teams=["blue", "red"], jti="other"))
    t3 = _role(make_jwt(teams=["blue"]))
    empty = _role(make_jwt(teams=[]))
    missing = _role(make_jwt(teams=_DROP))
    roles = [s.role for s in (t1, t2, t3, empty, missing) if isinstance(s, Scope)]
    assert len(roles) == 5
    assert roles[0] == roles[1] and len({roles[0], roles[2], roles[3], roles[4]}) == 4
    assert roles[4] == a.role, "no teams claim is the same as teams: null"


@pytest.mark.parametrize(
    ("token", "role_mode", "reason"),
    [
        (make_jwt(secret=b"wrong"), ROLE, PassReason.BAD_SIGNATURE),
        (make_jwt()[:-4] + "AAAA", ROLE, PassReason.BAD_SIGNATURE),
        (
            make_jwt(alg="none", header={"alg": "none", "typ": "JWT"}).rsplit(".", 1)[0] + ".",
            ROLE,
            PassReason.BAD_SIGNATURE,
        ),
        (make_jwt(alg="HS256"), RoleMode(JWT_SECRET, algorithms=frozenset({"HS512"})), PassReason.BAD_SIGNATURE),
        (
            make_jwt(alg="RS256"),
            RoleMode(JWT_SECRET, algorithms=frozenset({"RS256", "HS512"})),
            PassReason.BAD_SIGNATURE,
        ),
        (make_jwt(aud="other"), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(aud=_DROP), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(aud="x"), RoleMode(JWT_SECRET, audience="y"), PassReason.BAD_CLAIMS),
        (make_jwt(nbf=int(NOW) + 5), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(nbf=_DROP), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(iat=_DROP), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(role=None), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(teams="red"), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(teams=[1]), ROLE, PassReason.BAD_CLAIMS),
        (make_jwt(exp=int(NOW) - 1), ROLE, PassReason.EXPIRED),
    ],
)
def test_role_mode_verifies_like_airflow(token: str, role_mode: RoleMode, reason: PassReason):
    assert _role(token, role_mode=role_mode) is reason


def test_role_mode_accepts_hs256_and_audience_lists():
    assert isinstance(_role(make_jwt(alg="HS256")), Scope)
    assert isinstance(_role(make_jwt(aud=["other", "apache-airflow"])), Scope)
    # a tampered payload (role escalation) fails the signature
    head, _, sig = make_jwt().split(".")
    forged = make_jwt(role="admin").split(".")[1]
    assert _role(f"{head}.{forged}.{sig}") is PassReason.BAD_SIGNATURE


# ----- against Airflow's own token code ---------------------------------------------------------------------------

_AIRFLOW_TOKENS = textwrap.dedent(
    """
    import json, sys
    from airflow.api_fastapi.auth.tokens import JWTGenerator, JWTValidator
    secret, ours = sys.argv[1], sys.argv[2]
    gen = JWTGenerator(secret_key=secret, valid_for=86400, audience="apache-airflow", issuer=None, algorithm="GUESS")
    token = gen.generate(extras={"sub": "viewer1", "role": "viewer", "teams": None})
    validator = JWTValidator(secret_key=secret, audience="apache-airflow", issuer=None, leeway=0, algorithm=["GUESS"])
    claims = validator.validated_claims(ours)
    print("@@" + json.dumps({"token": token, "ours": claims}))
    """
)


@pytest.mark.airflow
def test_tokens_round_trip_with_airflow(tmp_path):
    venv = ensure_airflow_venv(3)
    now = time.time()
    ours = make_jwt(nbf=int(now) - 5, iat=int(now) - 5, exp=int(now) + 3600)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _AIRFLOW_TOKENS, JWT_SECRET.decode(), ours],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    result = json.loads(line[2:])
    assert result["ours"]["role"] == "viewer", "Airflow's validator accepts the tokens these tests build"
    theirs = _scope(_bearer(result["token"]), role_mode=ROLE, now=time.time() + 1)  # nbf is the issuing second
    assert isinstance(theirs, Scope) and theirs.role is not None and theirs.sub == "viewer1"

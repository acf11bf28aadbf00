"""Airflow 2 scopes: session cookie and Basic credential, keyed with the session's user and the users'
fingerprint; logout, expiry, password/role change and a logout through this process each change or end it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.airflow.auth2 import (
    AuthFacts,
    SessionAuth,
    decode_facts,
    encode_facts,
    extract_credential,
    scope2,
    session_key,
)
from proxy.airflow.auth2_db import facts_from_rows, user_of
from proxy.scope import PassReason, Scope

SECRET = b"k" * 32
SID = "e37dcdb6-7571-4152-bd80-1c3eafb7881d"
COOKIE = f"session={SID}.20QOuOwk7gOhINfsbk649zaHLN8"
BASIC = "Basic YWRtaW46YWRtaW4="
USERS = [(1, "admin", "scrypt:hash1", True), (2, "viewer1", "scrypt:hash2", True)]
ROLES = [(1, 1), (2, 3)]
PERMS = [(1, 10), (3, 11)]
LOGGED_IN = (SID, b'{"_fresh":true,"_permanent":true,"_user_id":1,"csrf_token":"x"}')


Row = tuple[object, ...]


def facts(
    sessions: Sequence[Row] = (LOGGED_IN,),
    users: Sequence[Row] = USERS,
    roles: Sequence[Row] = ROLES,
    perms: Sequence[Row] = PERMS,
) -> AuthFacts:
    return decode_facts(facts_from_rows(list(sessions), users, roles, perms))


def scope(headers: list[tuple[str, str]], f: AuthFacts | None = None) -> Scope | PassReason:
    return scope2(headers, facts() if f is None else f, SECRET)


def test_user_of_reads_the_logged_in_user_from_session_data():
    assert user_of(LOGGED_IN[1]) == "1"
    assert user_of(b'{"_permanent":true,"csrf_token":"x"}') is None  # after logout
    assert user_of(b'{"_user_id":"abc"}') == "abc"
    assert user_of(None) is None


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ([("Cookie", COOKIE)], "session"),
        ([("Cookie", "other=1; " + COOKIE + "; x=y")], "session"),
        ([("Authorization", BASIC)], "basic"),
    ],
)
def test_credentials(headers, kind):
    found = extract_credential(headers)
    assert not isinstance(found, PassReason) and found.kind == kind


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], PassReason.NO_CREDENTIAL),
        ([("Authorization", "Bearer x.y.z")], PassReason.NO_CREDENTIAL),
        ([("Authorization", BASIC), ("Cookie", COOKIE)], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Authorization", BASIC), ("Authorization", BASIC)], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", COOKIE + "; " + COOKIE)], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", COOKIE), ("Cookie", "a=b")], PassReason.AMBIGUOUS_CREDENTIAL),
        ([("Cookie", "session=unsigned")], PassReason.UNDECODABLE_TOKEN),
    ],
)
def test_unusable_credentials_pass(headers, reason):
    assert scope(headers) == reason


def test_a_logged_in_session_and_basic_have_distinct_stable_scopes():
    a, b = scope([("Cookie", COOKIE)]), scope([("Authorization", BASIC)])
    assert isinstance(a, Scope) and isinstance(b, Scope)
    assert a.credential != b.credential
    assert scope([("Cookie", COOKIE)]) == a
    assert SID not in a.credential and "YWRt" not in b.credential


def test_a_logged_out_expired_or_unknown_session_passes():
    logged_out = (SID, b'{"_permanent":true,"csrf_token":"x"}')
    assert scope([("Cookie", COOKIE)], facts(sessions=[logged_out])) == PassReason.LOGGED_OUT
    assert scope([("Cookie", COOKIE)], facts(sessions=[])) == PassReason.LOGGED_OUT
    assert scope([("Authorization", BASIC)], facts(sessions=[])) != PassReason.LOGGED_OUT  # Basic needs none


def test_the_same_cookie_logged_in_as_another_user_gets_another_scope():
    other = (SID, b'{"_user_id":2}')
    assert scope([("Cookie", COOKIE)]) != scope([("Cookie", COOKIE)], facts(sessions=[other]))


@pytest.mark.parametrize(
    "changed",
    [
        {"users": [(1, "admin", "scrypt:NEW", True), USERS[1]]},  # password change
        {"users": [(1, "admin", "scrypt:hash1", False), USERS[1]]},  # deactivated
        {"roles": [(1, 1), (2, 1)]},  # role change
        {"perms": [(1, 10)]},  # a role lost a permission
    ],
)
def test_any_user_or_role_change_moves_every_scope(changed):
    for headers in ([("Cookie", COOKIE)], [("Authorization", BASIC)]):
        assert scope(headers) != scope(headers, facts(**changed))


def test_no_facts_yet_passes():
    assert scope([("Cookie", COOKIE)], decode_facts({})) == PassReason.NO_AUTH_FACTS


def test_facts_carry_session_digests_not_ids():
    encoded = encode_facts("d", {session_key(SID): "1"})
    assert all(SID not in name for name in encoded)


def test_a_logout_through_this_process_drops_the_cookie_until_a_later_poll():
    auth = SessionAuth(SECRET)
    encoded = facts_from_rows([LOGGED_IN], USERS, ROLES, PERMS)  # the poll has not seen the logout yet
    headers = [("Cookie", COOKIE)]
    assert isinstance(auth.scope(headers, encoded, polled_at=100.0), Scope)
    auth.observe("POST", "/logout/", headers, now=101.0)
    assert auth.scope(headers, encoded, polled_at=101.5) == PassReason.LOGGED_OUT
    assert isinstance(auth.scope([("Authorization", BASIC)], encoded, polled_at=101.5), Scope)
    # a poll that started after the logout decides again (here: the session logged in anew)
    assert isinstance(auth.scope(headers, encoded, polled_at=104.0), Scope)


@pytest.mark.parametrize(("method", "path"), [("GET", "/logout/"), ("POST", "/api/v1/dags"), ("POST", "/home")])
def test_other_requests_drop_nothing(method, path):
    auth = SessionAuth(SECRET)
    encoded = facts_from_rows([LOGGED_IN], USERS, ROLES, PERMS)
    auth.observe(method, path, [("Cookie", COOKIE)], now=101.0)
    assert isinstance(auth.scope([("Cookie", COOKIE)], encoded, polled_at=101.5), Scope)

"""Pure forwarding rules: hop-by-hop stripping, forwarded headers, target rewriting."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.forwarding import ClientHop, is_trusted, request_headers, strip_hop_by_hop, upstream_target


def _hop(trusted: bool = False, peer: str | None = "192.0.2.10") -> ClientHop:
    return ClientHop(peer=peer, scheme="http", local_port=8080, trusted=trusted)


def _dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        assert name.lower() not in out, f"duplicate {name}"
        out[name.lower()] = value
    return out


def test_connection_named_headers_and_hop_by_hop_are_removed():
    headers = [
        ("Connection", "close, X-Foo"),
        ("X-Foo", "1"),
        ("Keep-Alive", "5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Connection", "keep-alive"),
        ("Content-Length", "10"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert strip_hop_by_hop(headers) == [("Content-Length", "10"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_untrusted_peer_cannot_spoof_forwarded_headers():
    out = _dict(
        request_headers(
            [("Host", "af.example"), ("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
             ("Forwarded", "for=1.2.3.4"), ("X-Forwarded-Prefix", "/x")],
            _hop(),
            host_mode="preserve",
            upstream_netloc="up:8080",
        )
    )
    assert out == {
        "host": "af.example",
        "x-forwarded-for": "192.0.2.10",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "af.example",
        "x-forwarded-port": "8080",
    }


def test_trusted_peer_extends_the_chain_and_keeps_its_headers():
    out = _dict(
        request_headers(
            [("Host", "svc"), ("X-Forwarded-For", "203.0.113.1"), ("x-forwarded-for", "10.0.0.2"),
             ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "af.example"), ("X-Forwarded-Port", "443"),
             ("X-Forwarded-Prefix", "/team"), ("Forwarded", "for=203.0.113.1;proto=https")],
            _hop(trusted=True),
            host_mode="preserve",
            upstream_netloc="up:8080",
            prefix="/airflow",
        )
    )
    assert out["x-forwarded-for"] == "203.0.113.1, 10.0.0.2, 192.0.2.10"
    assert out["x-forwarded-proto"] == "https"
    assert out["x-forwarded-host"] == "af.example"
    assert out["x-forwarded-port"] == "443"
    assert out["x-forwarded-prefix"] == "/team/airflow"
    assert out["forwarded"] == "for=203.0.113.1;proto=https"


def test_host_modes():
    preserve = _dict(request_headers([("Host", "a.example:9000")], _hop(), host_mode="preserve", upstream_netloc="u"))
    upstream = _dict(request_headers([("Host", "a.example:9000")], _hop(), host_mode="upstream", upstream_netloc="u"))
    assert preserve["host"] == "a.example:9000" and preserve["x-forwarded-port"] == "9000"
    assert upstream["host"] == "u" and upstream["x-forwarded-host"] == "a.example:9000"


def test_missing_host_falls_back_to_upstream():
    out = _dict(request_headers([], _hop(peer=None), host_mode="preserve", upstream_netloc="u:1"))
    assert out["host"] == "u:1"
    assert out["x-forwarded-for"] == "unknown"
    assert "x-forwarded-host" not in out


def test_expect_is_answered_by_the_proxy_not_forwarded():
    out = _dict(request_headers([("Expect", "100-continue")], _hop(), host_mode="upstream", upstream_netloc="u"))
    assert "expect" not in out


def test_trace_context_reaches_airflow_unchanged():
    # W3C trace context (an OTel collector in front, or the UI's own instrumentation) is end-to-end.
    headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("tracestate", "a=1")]
    out = _dict(request_headers(headers, _hop(), host_mode="upstream", upstream_netloc="u"))
    assert out["traceparent"] == headers[0][1]
    assert out["tracestate"] == "a=1"


def test_the_admin_bypass_header_never_reaches_airflow():
    headers = [("x-dagcache-bypass", "admin-token"), ("Authorization", "Bearer t")]
    out = _dict(request_headers(headers, _hop(), host_mode="upstream", upstream_netloc="u"))
    assert "x-dagcache-bypass" not in out
    assert out["authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("peer", "trusted", "expected"),
    [
        ("10.1.2.3", (ipaddress.ip_network("10.0.0.0/8"),), True),
        ("11.1.2.3", (ipaddress.ip_network("10.0.0.0/8"),), False),
        ("::ffff:10.1.2.3", (ipaddress.ip_network("10.0.0.0/8"),), True),
        ("fe80::1%eth0", (ipaddress.ip_network("fe80::/10"),), True),
        ("not-an-ip", (ipaddress.ip_network("10.0.0.0/8"),), False),
        (None, (ipaddress.ip_network("10.0.0.0/8"),), False),
        ("10.1.2.3", (), False),
        ("8.8.8.8", "*", True),
    ],
)
def test_is_trusted(peer, trusted, expected):
    assert is_trusted(peer, trusted) is expected


@pytest.mark.parametrize(
    ("raw", "base", "strip", "up", "expected"),
    [
        ("/api/v2/dags?limit=1", "", False, "", ("/api/v2/dags?limit=1", "")),
        ("/airflow/api/v2/dags", "/airflow", False, "", ("/airflow/api/v2/dags", "")),
        ("/airflow/api/v2/dags", "/airflow", True, "", ("/api/v2/dags", "/airflow")),
        ("/airflow", "/airflow", True, "", ("/", "/airflow")),
        ("/airflow?x=1", "/airflow", True, "", ("/?x=1", "/airflow")),
        ("/airflowx/a", "/airflow", True, "", ("/airflowx/a", "")),
        ("/a%2Fb/../c", "", False, "/mount", ("/mount/a%2Fb/../c", "")),
    ],
)
def test_upstream_target(raw, base, strip, up, expected):
    assert upstream_target(raw, base_path=base, strip_base_path=strip, upstream_path=up) == expected

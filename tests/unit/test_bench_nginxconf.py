"""The nginx proxy_cache configuration ``dagcache bench --nginx`` writes."""

from __future__ import annotations

import pytest

from proxy.bench.nginxconf import nginx_config, upstream_address


def config(**overrides: object) -> str:
    kwargs: dict[str, object] = {"upstream": "http://127.0.0.1:8080", "port": 18080, "workdir": "/tmp/x"}
    kwargs.update(overrides)
    return nginx_config(**kwargs)  # type: ignore[arg-type]


def test_users_never_share_entries_the_key_contains_the_credentials():
    text = config()
    key_line = next(line for line in text.splitlines() if "proxy_cache_key" in line)
    assert "$http_authorization" in key_line and "$http_cookie" in key_line and "$request_uri" in key_line


def test_listens_on_loopback_and_proxies_to_the_upstream_with_keepalive():
    text = config()
    assert "listen 127.0.0.1:18080" in text
    assert "server 127.0.0.1:8080;" in text and "keepalive" in text
    assert "proxy_pass http://airflow;" in text
    assert "add_header X-Cache $upstream_cache_status always;" in text


def test_everything_nginx_writes_stays_in_the_workdir():
    for line in config().splitlines():
        for word in line.split():
            if word.startswith("/") and word != "/":
                assert word.startswith("/tmp/x/"), line


def test_ttl_pinning_and_user():
    text = config(ttl=2.4, cpu=1, user="root")
    assert "proxy_cache_valid 200 2s;" in text
    assert "proxy_cache_valid 200 1s;" in config(ttl=0.25)  # nginx's resolution is one second
    assert "worker_cpu_affinity 10;" in text
    assert "user root;" in text
    plain = config()
    assert "worker_cpu_affinity" not in plain and "user " not in plain
    assert "worker_processes 1;" in plain and "proxy_cache_lock on;" in plain


def test_upstream_address():
    assert upstream_address("http://airflow:8080/") == "airflow:8080"
    assert upstream_address("http://airflow") == "airflow:80"
    assert upstream_address("http://[::1]:8080") == "[::1]:8080"
    for bad in ("https://airflow", "http://airflow/sub", "airflow:8080"):
        with pytest.raises(ValueError, match="--nginx needs"):
            upstream_address(bad)


def test_bad_port_or_ttl_is_refused():
    with pytest.raises(ValueError, match="port"):
        config(port=0)
    with pytest.raises(ValueError, match="ttl"):
        config(ttl=0)

"""``[redis] url``: the accepted forms, what they parse to, and the message for each kind of bad URL."""

from __future__ import annotations

import pytest

from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.redisurl import RedisUrl, RedisUrlError, parse_redis_url


@pytest.mark.parametrize(
    ("url", "tls", "db"),
    [
        ("redis://redis:6379/0", False, 0),
        ("redis://:s3cret@redis/3", False, 3),
        ("rediss://user:pw@redis.example.com:6380/1", True, 1),
        ("redis://127.0.0.1:6379/0?socket_keepalive=true", False, 0),
        ("redis://[::1]:6379", False, 0),
        ("unix:///var/run/redis.sock?db=2", False, 0),
    ],
)
def test_standalone_forms(url: str, tls: bool, db: int) -> None:
    parsed = parse_redis_url(url)
    assert (parsed.topology, parsed.tls, parsed.db, parsed.url) == ("standalone", tls, db, url)


def test_sentinel_with_several_sentinels_credentials_and_db() -> None:
    parsed = parse_redis_url("rediss+sentinel://app:p%40ss@s1:26380,s2,[fd00::7]:5000/my%20master/4")
    assert parsed == RedisUrl(
        topology="sentinel",
        url="rediss+sentinel://app:p%40ss@s1:26380,s2,[fd00::7]:5000/my%20master/4",
        tls=True,
        nodes=(("s1", 26380), ("s2", 26379), ("fd00::7", 5000)),
        service_name="my master",
        db=4,
        username="app",
        password="p@ss",
    )
    assert parsed.describe() == "sentinel my master via s1:26380,s2:26379,[fd00::7]:5000 (db 4)"


def test_sentinel_defaults_to_db_0_and_accepts_a_trailing_slash() -> None:
    for url in ("redis+sentinel://s1/mymaster", "redis+sentinel://:pw@s1:26379/mymaster/"):
        parsed = parse_redis_url(url)
        assert (parsed.service_name, parsed.db, parsed.nodes) == ("mymaster", 0, (("s1", 26379),))


def test_cluster_seed_nodes() -> None:
    parsed = parse_redis_url("redis+cluster://:pw@node-a:7000,node-b:7001,node-c")
    assert parsed.topology == "cluster"
    assert parsed.nodes == (("node-a", 7000), ("node-b", 7001), ("node-c", 6379))
    assert (parsed.password, parsed.tls) == ("pw", False)
    assert parse_redis_url("rediss+cluster://node-a:7000/").tls
    assert parse_redis_url("redis+cluster://node-a:7000/0").nodes == (("node-a", 7000),)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://redis:6379", "must be empty (embedded store) or a redis://"),
        ("redis+sentinl://s1/m", "must be empty (embedded store) or a redis://"),
        ("redis:6379", "must be empty (embedded store) or a redis://"),
        ("redis+sentinel://s1:26379", "needs the master's service name"),
        ("redis+sentinel://s1:26379/", "needs the master's service name"),
        ("redis+sentinel://s1/m/1/extra", "needs the master's service name"),
        ("redis+sentinel://s1/m/x", "bad database number 'x'"),
        ("redis+sentinel://s1:port/m", "bad port 'port' for host 's1'"),
        ("redis+sentinel://s1:0/m", "bad port '0'"),
        ("redis+sentinel://s1:70000/m", "bad port '70000'"),
        ("redis+sentinel://s1,,s2/m", "needs a host"),
        ("redis+sentinel://s1/m?ssl=true", "takes no query string"),
        ("redis+cluster://n1:7000/1", "only database 0"),
        ("redis+cluster://", "needs a host"),
        ("redis+cluster://[::1:7000", "bad IPv6 address"),
        ("redis+cluster://bad_host!:7000", "bad host 'bad_host!'"),
        ("redis://r1:6379,r2:6379/0", "for several use redis+sentinel:// or redis+cluster://"),
        ("redis://:pw@", "needs a host"),
        ("redis://redis:6379/zero", "bad database number 'zero'"),
        ("unix://relative.sock", "absolute socket path"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        parse_redis_url(url)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_a_bad_url_fails_config_loading_naming_the_key_and_hiding_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGCACHE_REDIS__URL", "redis+sentinel://:hunter2@s1:26379")
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert "[redis] url = <redacted>: a redis+sentinel:// URL needs the master's service name" in message
    assert "DAGCACHE_REDIS__URL" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["redis+sentinel://s1:26379,s2:26379/mymaster/2", "rediss+cluster://:pw@n1:7000,n2:7001", "unix:///r.sock"]
)
def test_good_urls_load(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DAGCACHE_REDIS__URL", url)
    assert load_config().redis.url == url

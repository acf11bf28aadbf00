"""Configuration: the example file, environment overrides, and operator-facing errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from proxy.config import Settings, load_config, parse_otlp_headers, redact_url
from proxy.errors import ConfigError
from tests.conftest import REPO

EXAMPLE = REPO / "config.example.toml"


def _keys(model: type[BaseModel]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        out[name] = set(annotation.model_fields)
    return out


def test_example_lists_exactly_the_settings_keys():
    example = tomllib.loads(EXAMPLE.read_text())
    assert {section: set(values) for section, values in example.items()} == _keys(Settings)


def test_example_values_are_the_defaults():
    assert load_config(EXAMPLE) == Settings()


def test_every_example_key_has_a_comment():
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#") and not line.startswith("["):
            assert lines[index - 1].startswith("#"), f"undocumented key: {line}"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 7000\nworkers = 3\n[upstream]\nurl = "http://file:1"\n')
    monkeypatch.setenv("DAGCACHE_SERVER__PORT", "7001")
    monkeypatch.setenv("DAGCACHE_UPSTREAM__URL", "https://env.example/base/")
    settings = load_config(config)
    assert settings.server.port == 7001
    assert settings.server.workers == 3
    assert settings.upstream.url == "https://env.example/base"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "c.toml"
    config.write_text("[server]\nport = 7002\n")
    monkeypatch.setenv("DAGCACHE_CONFIG", str(config))
    assert load_config().server.port == 7002


def test_trusted_proxies_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DAGCACHE_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert load_config().server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n', "'10.0.0.0/33' is not an IP address, a CIDR network or '*'"),
        ('[server]\nbase_path = "airflow"\n', "must be empty or an absolute path"),
        ("[server]\nworkers = 0\n", "[server] workers = 0: Input should be greater than or equal to 1"),
        ('[upstream]\nurl = "http://x?y=1"\n', "must not contain a query or fragment"),
        ('[upstream]\nhost_header = "rewrite"\n', "Input should be 'preserve' or 'upstream'"),
        ("[admin]\nport = 8080\n", "admin.port must differ from server.port"),
        ('[redis]\nurl = "memcached://x"\n', "must be empty (embedded store) or a redis://"),
        ("[caching]\nttl = 1\n", "caching = {'ttl': 1}: unknown key; allowed keys here: admin, cache, database, log"),
        ("[server]\nport = \"8080x\"\n", "(or env DAGCACHE_SERVER__PORT)"),
        ('[metrics]\notlp_endpoint = "collector:4318"\n', "must be the collector's OTLP/HTTP metrics URL, such as"),
        ('[metrics]\notlp_endpoint = "http://c:99999/v1/metrics"\n', "otlp_endpoint = 'http://c:99999/v1/metrics'"),
        ("[metrics]\notlp_interval = 0.5\n", "[metrics] otlp_interval = 0.5: Input should be greater than or equal"),
        ('[metrics]\notlp_headers = "Authorization"\n', "[metrics] otlp_headers = <redacted>: must be name=value"),
        (
            '[admin]\nenabled = false\n[metrics]\notlp_endpoint = "http://c:4318/v1/metrics"\n',
            "metrics.otlp_endpoint needs admin.enabled = true (the admin listener pushes the metrics)",
        ),
    ],
)
def test_errors_name_key_value_and_what_is_allowed(tmp_path: Path, toml: str, fragment: str):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert fragment in str(info.value)


def test_secret_values_are_redacted_in_errors(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "db2://u:topsecret@h/x"\n[redis]\nurl = "http://:pw2@h"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "topsecret" not in message and "pw2" not in message
    assert message.count("<redacted>") == 2


def test_redact_url():
    assert redact_url("postgresql://airflow:pw@db:5432/airflow") == "postgresql://airflow:***@db:5432/airflow"
    assert redact_url("redis://:pw@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"
    assert redact_url("") == ""


def test_not_utf8(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_bytes(b"\xff\xfe[server]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(config)


def test_otlp_headers_format_of_the_otel_variable():
    assert parse_otlp_headers("") == {}
    assert parse_otlp_headers("Authorization=Basic%20dXNlcjpwYXNz, x-tenant = t1,") == {
        "Authorization": "Basic dXNlcjpwYXNz",
        "x-tenant": "t1",
    }
    for bad in ("novalue", "=v", "bad name=v", "a=b%0D%0AInjected: 1"):
        with pytest.raises(ValueError):
            parse_otlp_headers(bad)


def test_otlp_headers_from_environment_are_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DAGCACHE_METRICS__OTLP_ENDPOINT", "https://otlp.example/v1/metrics")
    monkeypatch.setenv("DAGCACHE_METRICS__OTLP_HEADERS", "Authorization=Bearer%20s3cret")
    assert load_config().metrics.otlp_headers == "Authorization=Bearer%20s3cret"
    monkeypatch.setenv("DAGCACHE_METRICS__OTLP_HEADERS", "Authorization: Bearer s3cret")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "s3cret" not in str(info.value)
    assert "(or env DAGCACHE_METRICS__OTLP_HEADERS)" in str(info.value)


def test_readme_configuration_table_names_every_key():
    """The README's configuration table is where operators look first: every key of every section is there."""
    rows = {
        line.split("|")[1].strip().strip("`[]"): line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `[")
    }
    missing = {
        section: sorted(key for key in keys if f"`{key}`" not in rows.get(section, ""))
        for section, keys in _keys(Settings).items()
    }
    assert {section: keys for section, keys in missing.items() if keys} == {}

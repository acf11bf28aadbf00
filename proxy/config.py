"""Configuration: one TOML file, overridden by ``DAGCACHE_*`` environment variables.

Every key, its default and its meaning is documented in ``config.example.toml``; a test loads that
file and checks that it lists exactly the keys defined here. Nested keys map to environment variables
with a double underscore: ``[upstream] url`` is ``DAGCACHE_UPSTREAM__URL``. Precedence, highest first:
environment, file, default.

:func:`load_config` is the only place that reads the file or the environment. Any problem becomes a
:class:`~proxy.errors.ConfigError` whose message names the key, the bad value (redacted for secrets)
and what is allowed.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from proxy.errors import ConfigError
from proxy.redisurl import parse_redis_url

ENV_PREFIX = "DAGCACHE_"
CONFIG_PATH_ENV = "DAGCACHE_CONFIG"

#: Keys whose values are never shown in logs or error messages.
SECRET_KEYS = frozenset(
    {
        "redis.url",
        "redis.password",
        "database.url",
        "cache.secret",
        "cache.jwt_secret",
        "admin.token",
        "metrics.otlp_headers",
    }
)

#: What ``[metrics] otlp_endpoint`` needs installed (the ``otel`` extra), and the one line that says so.
OTEL_MODULE = "opentelemetry.exporter.otlp.proto.http"
OTEL_MISSING = (
    "[metrics] otlp_endpoint is set but OpenTelemetry is not installed: pip install 'dagcache[otel]' "
    "(or empty otlp_endpoint)"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    """The client-facing listener."""

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    base_path: str = ""
    strip_base_path: bool = False
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    max_url_length: int = Field(8190, ge=256, le=1_048_576)
    max_header_size: int = Field(32768, ge=1024, le=1_048_576)
    max_header_count: int = Field(100, ge=8, le=10_000)
    max_body_size: int = Field(104_857_600, ge=0)
    shutdown_grace: float = Field(30.0, ge=0, le=3600)
    keepalive_timeout: float = Field(75.0, ge=0, le=3600)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    hit_lane: bool = True

    @field_validator("base_path")
    @classmethod
    def _check_base_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and (not value.startswith("/") or "?" in value or "#" in value or "//" in value):
            raise ValueError("must be empty or an absolute path such as '/airflow'")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_trusted(cls, value: object) -> object:
        # DAGCACHE_SERVER__TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1", like uvicorn's FORWARDED_ALLOW_IPS.
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address, a CIDR network or '*'") from None
        return value

    def trusted_networks(self) -> tuple[Network, ...] | Literal["*"]:
        """The parsed ``trusted_proxies``; ``"*"`` when every peer is trusted."""
        if "*" in self.trusted_proxies:
            return "*"
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)


class UpstreamConfig(_Section):
    """The Airflow api-server (3.x) or webserver (2.x) behind dagcache."""

    url: str = "http://127.0.0.1:8081"
    host_header: Literal["preserve", "upstream"] = "preserve"
    connect_timeout: float = Field(5.0, gt=0, le=600)
    read_timeout: float = Field(120.0, ge=0, le=86_400)
    pool_size: int = Field(100, ge=1, le=10_000)
    pool_timeout: float = Field(30.0, gt=0, le=3600)
    readiness_path: str = "/"
    #: which route table and authorization rules: "auto" follows the metadata DB's schema (Airflow 2 or 3)
    profile: Literal["auto", "airflow3", "airflow2"] = "auto"

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, such as 'http://airflow-api-server:8080'")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("readiness_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class AdminConfig(_Section):
    """The admin listener: health probes, metrics and the status page."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9090, ge=1, le=65535)
    readiness_cache: float = Field(2.0, ge=0, le=300)
    token: str = ""
    ready_requires_versions: bool = False


class RedisConfig(_Section):
    """The shared store. Empty ``url``: the embedded in-process store (one process, nothing shared)."""

    url: str = ""
    password: str = ""
    connect_timeout: float = Field(1.0, gt=0, le=60)
    key_prefix: str = Field("dagcache", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value:
            parse_redis_url(value)  # RedisUrlError is a ValueError: reported against [redis] url
        return value


class DatabaseConfig(_Section):
    """Airflow's metadata database (read only)."""

    url: str = ""
    connect_timeout: float = Field(5.0, gt=0, le=300)
    prepared_statements: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        scheme = urlsplit(value).scheme.split("+", 1)[0]
        if scheme not in ("postgresql", "postgres", "mysql", "sqlite"):
            raise ValueError("must be a postgresql://, mysql:// or sqlite:// SQLAlchemy URL (like sql_alchemy_conn)")
        return value


class VersionsConfig(_Section):
    """DAG versions from the metadata DB (one leader polls for the fleet)."""

    poll_interval: float = Field(1.0, gt=0, le=300)
    lease_ttl: float = Field(5.0, ge=1, le=300)
    state_max_age: float = Field(60.0, ge=0, le=86_400)
    max_version_age: float = Field(10.0, gt=0, le=86_400)
    statement_timeout: float = Field(2.0, gt=0, le=300)
    ignore_parse_time: bool = True
    fallback_poll_interval: float = Field(0.0, ge=0, le=3600)
    #: seconds from a DAG definition change until every upstream worker serves it (Airflow 2: per-worker DagBag,
    #: min_serialized_dag_fetch_interval 10 s + a 2 s margin); -1: that for Airflow 2, 0 for Airflow 3
    upstream_convergence: float = Field(-1.0, ge=-1, le=3600)

    @model_validator(mode="after")
    def _check_lease(self) -> VersionsConfig:
        if self.lease_ttl <= self.poll_interval:
            raise ValueError("versions.lease_ttl must be longer than versions.poll_interval (renewed every poll)")
        if self.max_version_age <= self.poll_interval:
            raise ValueError("versions.max_version_age must be longer than versions.poll_interval")
        return self


class CacheConfig(_Section):
    """Serving DAG views from the cache (needs [database] url; otherwise everything passes through)."""

    mode: Literal["on", "off", "shadow"] = "on"
    secret: str = ""
    scope: Literal["credential", "role"] = "credential"
    jwt_secret: str = ""
    jwt_audience: str = "apache-airflow"
    refresh_window: float = Field(300.0, ge=0, le=86_400)
    ttl: float = Field(3600.0, gt=0, le=30 * 86_400)
    max_entry_size: int = Field(8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    l1_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    fill_wait: float = Field(30.0, gt=0, le=3600)
    compression_level: int = Field(6, ge=1, le=9)
    stale_if_error: bool = False
    serve_stale: bool = False

    @model_validator(mode="after")
    def _check_role_scope(self) -> CacheConfig:
        if self.scope == "role" and not self.jwt_secret:
            raise ValueError("cache.scope = 'role' needs cache.jwt_secret (Airflow's [api_auth] jwt_secret)")
        return self


class LogConfig(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access_log: bool = True


class MetricsConfig(_Section):
    """Metric export besides the admin listener's /metrics: StatsD over UDP (empty ``statsd``: off) and
    OpenTelemetry over OTLP/HTTP (empty ``otlp_endpoint``: off; needs the ``otel`` extra)."""

    statsd: str = ""
    statsd_prefix: str = Field("dagcache", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    statsd_interval: float = Field(10.0, ge=1, le=3600)
    statsd_tags: bool = True
    otlp_endpoint: str = ""
    otlp_interval: float = Field(10.0, ge=1, le=3600)
    otlp_headers: str = ""

    @field_validator("statsd")
    @classmethod
    def _check_statsd(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError(
                "must be the collector's OTLP/HTTP metrics URL, such as 'http://otel-collector:4318/v1/metrics'"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("otlp_headers")
    @classmethod
    def _check_otlp_headers(cls, value: str) -> str:
        parse_otlp_headers(value)
        return value


def parse_otlp_headers(value: str) -> dict[str, str]:
    """``"name=value,name2=value2"`` (the format of ``OTEL_EXPORTER_OTLP_HEADERS``; values may be
    percent-encoded, e.g. ``Authorization=Basic%20dXNlcjpwYXNz``) as a dict, or :class:`ValueError`."""
    headers: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, encoded = item.partition("=")
        name = name.strip()
        if not sep or not name or not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name):
            raise ValueError("must be name=value pairs separated by commas, e.g. 'Authorization=Bearer%20abc'")
        text = unquote(encoded.strip())
        if any(c in text for c in "\r\n\0"):
            raise ValueError("a header value must not contain line breaks")
        headers[name] = text
    return headers


def parse_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) or :class:`ValueError`."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8125")
    return host, int(port)


class Settings(BaseSettings):
    """The whole configuration; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    admin: AdminConfig = AdminConfig()
    redis: RedisConfig = RedisConfig()
    database: DatabaseConfig = DatabaseConfig()
    versions: VersionsConfig = VersionsConfig()
    cache: CacheConfig = CacheConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_sections(self) -> Settings:
        if self.admin.enabled and self.admin.port == self.server.port:
            raise ValueError("admin.port must differ from server.port (the admin listener has its own port)")
        if self.metrics.otlp_endpoint and not self.admin.enabled:
            raise ValueError("metrics.otlp_endpoint needs admin.enabled = true (the admin listener pushes the metrics)")
        return self


def load_config(path: str | Path | None = None) -> Settings:
    """Read ``path`` (or ``$DAGCACHE_CONFIG``, or nothing), apply ``DAGCACHE_*`` overrides, validate.

    Raises :class:`ConfigError` with an operator-facing message.
    """
    if path is None and os.environ.get(CONFIG_PATH_ENV):
        path = os.environ[CONFIG_PATH_ENV]
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = _read_toml(Path(path))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    if settings.metrics.otlp_endpoint and not installed(OTEL_MODULE):
        raise ConfigError(OTEL_MISSING)
    return settings


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (copy config.example.toml and edit it)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def format_validation_error(exc: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    """One line per problem: ``[section] key = value: what is wrong (env DAGCACHE_SECTION__KEY)``.

    ``prefix`` is the location of the validated model inside :class:`Settings` (e.g. ``("server",)``).
    """
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors(include_url=False):
        loc = [*prefix, *(str(part) for part in err["loc"])]
        dotted = ".".join(loc)
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key; allowed keys here: {', '.join(_allowed_keys(loc[:-1]))}"
        value = "<redacted>" if dotted in SECRET_KEYS else _short(err.get("input"))
        if len(loc) >= 2:
            where = f"[{'.'.join(loc[:-1])}] {loc[-1]}"
        elif loc:
            where = loc[0]
        else:
            where = "(config)"
        env_name = ENV_PREFIX + "__".join(part.upper() for part in loc) if loc else ""
        hint = f" (or env {env_name})" if env_name else ""
        shown = f" = {value}" if err["type"] != "missing" and loc else ""
        lines.append(f"  {where}{shown}: {message}{hint}")
    return "\n".join(lines)


def _allowed_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in section:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the URL with any password replaced, safe to log."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))

"""Switchyard's settings: one frozen object read once from the environment.

`load_settings(environ, overrides)` is the only place that reads configuration; every other
module receives the `Settings` it was given. Environment variable names are the field names in
upper case (`worker_concurrency` <- `WORKER_CONCURRENCY`); list-valued settings are comma
separated. A bad value raises `SettingsError` naming the variable and what it accepts, so the
process stops at start-up instead of misbehaving later. Settings are never logged: they hold
tokens and keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from msgspec import Meta


class Role(StrEnum):
    """The loops one process can run; any subset, any number of replicas of each."""

    API = "api"
    WORKER = "worker"
    SCHEDULER = "scheduler"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


Port = Annotated[int, Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]


class SettingsError(ValueError):
    """A configuration value that start-up cannot accept; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a Switchyard process is configured with. Defaults suit `switchyard run`."""

    # Database: DATABASE_URL, else POSTGRES_* when POSTGRES_HOST is set, else embedded.
    database_url: str | None = None
    postgres_host: str | None = None
    postgres_port: Port = 5432
    postgres_user: str = "postgres"
    postgres_password: str = "postgres"  # noqa: S105 - the seed's documented default
    postgres_db: str = "mydb"
    db_pool_min_size: Annotated[int, Meta(ge=0)] = 1
    db_pool_max_size: PositiveInt = 20  # the worker holds WORKER_CONCURRENCY + 3 at most
    data_dir: str = ".switchyard"

    # Process
    roles: frozenset[Role] = frozenset(Role)
    host: str = "127.0.0.1"
    port: Port = 8080
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.JSON
    shutdown_grace_seconds: Annotated[float, Meta(ge=0)] = 30.0
    # The address senders reach the api at (`https://hooks.example.com`, no trailing slash):
    # webhook answers show `url` as PUBLIC_URL + /hooks/{path}; relative when unset.
    public_url: str | None = None

    # Access and secrets
    api_tokens: tuple[str, ...] = ()
    encryption_keys: tuple[str, ...] = ()
    # When set, /metrics answers only `Authorization: Bearer <metrics_token>` (/health and
    # /ready stay open for probes).
    metrics_token: Annotated[str, Meta(min_length=16)] | None = None

    # Object store for published workflow documents
    object_store_url: str | None = None
    s3_endpoint_url: str | None = None

    # Worker and queue
    worker_concurrency: Annotated[int, Meta(ge=1, le=1000)] = 8
    # The event-loop lag the worker keeps under: past it the worker claims fewer jobs
    # (server.worker.pacing), so the API and /health of the same process answer while the
    # worker is saturated. 0 turns the pacing off.
    worker_target_lag_seconds: Annotated[float, Meta(ge=0, le=10)] = 0.05
    job_poll_interval_seconds: Seconds = 1.0
    job_lease_seconds: Seconds = 30.0
    job_timeout_seconds: Seconds = 300.0
    # Backoff of failed attempts: base * 2**(n-1) seconds, jittered, capped at the max.
    job_retry_base_seconds: Seconds = 1.0
    job_retry_max_seconds: Seconds = 600.0
    # Wait before re-opening a lost LISTEN connection (polling covers the gap).
    job_listener_reconnect_seconds: Seconds = 1.0

    # Triggers, actions, guard rails, retention
    database_trigger_tables: tuple[str, ...] = ()
    # Private hosts, addresses or networks actions may connect to: HTTP calls, OAuth2 token
    # endpoints and the SMTP server of an email credential (all refused otherwise).
    http_allowed_hosts: tuple[str, ...] = ()
    max_payload_bytes: PositiveInt = 1_048_576
    # Webhook registration (server.scheduler.registrations): how often each registration is
    # checked at its sender (drift repaired, renewals made), and how long one sender call may
    # take (also how long a successor waits out a call a killed replica left in flight).
    registration_check_seconds: Seconds = 300.0
    registration_call_timeout_seconds: Annotated[float, Meta(gt=0, le=300)] = 10.0
    retention_days: PositiveInt = 30

    # HTTP limits, enforced as bytes arrive (server.http_limits). The request line and headers
    # share one budget: 16 KB, Node's default, is ten times what webhook senders use.
    http_max_header_bytes: Annotated[int, Meta(ge=1024)] = 16_384
    http_max_headers: PositiveInt = 100  # Apache's LimitRequestFields
    # A head must arrive within this of its first byte (of the connection, for the first one).
    http_header_timeout_seconds: Seconds = 10.0
    # A body must arrive within this of its head: 1 MB at 35 KB/s.
    http_body_timeout_seconds: Seconds = 30.0
    # Idle time between requests; behind a load balancer, set it above the balancer's own.
    http_keepalive_timeout_seconds: Seconds = 5.0
    # Open connections; keep it below the open-file limit (`ulimit -n`) minus the pool.
    http_max_connections: PositiveInt = 1000

    # Tracing (server.tracing): spans are exported by OTLP/HTTP when an endpoint is set; the
    # OpenTelemetry SDK reads the other OTEL_* variables (headers, service name, sampler,
    # batch delays) from the environment itself. OTEL_SDK_DISABLED=true keeps it off.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_sdk_disabled: bool = False

    def __post_init__(self) -> None:
        if self.database_url is not None and not re.match(r"^postgres(ql)?://", self.database_url):
            raise ValueError(
                "DATABASE_URL: must start with postgresql:// (postgresql://user@host:5432/db)"
            )
        if self.object_store_url is not None and not re.match(
            r"^(s3://[^/]+|file://.+)", self.object_store_url
        ):
            raise ValueError(
                "OBJECT_STORE_URL: must be s3://bucket[/prefix] or file:///absolute/folder"
            )
        if self.public_url is not None and not re.fullmatch(
            r"https?://[^/?#\s]+(/[^?#\s]*[^/?#\s])?", self.public_url
        ):
            raise ValueError(
                "PUBLIC_URL: must be an absolute http(s) URL without a trailing slash, query "
                "or fragment (https://switchyard.example.com or https://example.com/switchyard)"
            )
        if not self.roles:
            raise ValueError("ROLES: at least one of api, worker, scheduler is needed")
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")

    @property
    def uses_embedded_postgres(self) -> bool:
        """True when neither DATABASE_URL nor POSTGRES_HOST is set (the zero-config default)."""
        return self.database_url is None and self.postgres_host is None

    @property
    def external_database_dsn(self) -> str:
        """The DSN of a configured (not embedded) PostgreSQL."""
        if self.database_url is not None:
            return self.database_url
        user = quote(self.postgres_user, safe="")
        password = quote(self.postgres_password, safe="")
        return (
            f"postgresql://{user}:{password}@{self.postgres_host}:{self.postgres_port}/"
            f"{quote(self.postgres_db, safe='')}"
        )

    @property
    def tracing_enabled(self) -> bool:
        """True when spans are to be exported (an OTLP endpoint is set, the SDK not disabled)."""
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        return endpoint is not None and not self.otel_sdk_disabled

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


# Settings whose environment value is a comma-separated list.
_LIST_FIELDS = frozenset(
    name
    for name, kind in zip(Settings.__struct_fields__, msgspec.structs.fields(Settings), strict=True)
    if "tuple" in str(kind.type) or "frozenset" in str(kind.type)
)
# msgspec ends a message with the path of the field it refers to.
_FIELD_PATH = re.compile(r"at `\$\.(\w+)")


def load_settings(
    environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
) -> Settings:
    """Read settings from environment variables; `overrides` (CLI flags) win over them.

    Raises:
        SettingsError: a value is malformed; the message names the variable and the fix.
    """
    raw: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        value = environ.get(name.upper())
        if value is None or value == "":
            continue
        raw[name] = _split_list(value) if name in _LIST_FIELDS else value
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise SettingsError(_explain(str(error))) from None


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _explain(message: str) -> str:
    """Turn msgspec's `... - at `$.port`` into a message naming the environment variable."""
    match = _FIELD_PATH.search(message)
    if match is None:
        return message  # raised by Settings.__post_init__, which names the variable itself
    field = match.group(1)
    reason = message.split(" - at ")[0]
    allowed = _allowed_values(field)
    hint = f"; allowed: {allowed}" if allowed else ""
    return f"{field.upper()}: {reason}{hint}"


def _allowed_values(field: str) -> str:
    choices: dict[str, type[StrEnum]] = {
        "roles": Role,
        "log_level": LogLevel,
        "log_format": LogFormat,
    }
    enum = choices.get(field)
    if enum is None:
        return ""
    listed = ", ".join(member.value for member in enum)
    return f"comma-separated subset of {listed}" if field == "roles" else listed

from __future__ import annotations

import pytest

from config.settings import LogLevel, Role, SettingsError, load_settings


def test_defaults_use_the_embedded_database_and_all_roles() -> None:
    settings = load_settings({})
    assert settings.uses_embedded_postgres
    assert settings.roles == frozenset(Role)
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8080, ".switchyard")


def test_postgres_variables_build_a_dsn_with_the_seed_defaults() -> None:
    settings = load_settings({"POSTGRES_HOST": "db.internal"})
    assert not settings.uses_embedded_postgres
    assert settings.external_database_dsn == "postgresql://postgres:postgres@db.internal:5432/mydb"


def test_password_with_reserved_characters_is_quoted_in_the_dsn() -> None:
    settings = load_settings({"POSTGRES_HOST": "h", "POSTGRES_PASSWORD": "p@ss/word"})
    assert settings.external_database_dsn == "postgresql://postgres:p%40ss%2Fword@h:5432/mydb"


def test_database_url_wins_over_postgres_variables() -> None:
    url = "postgresql://app@db:5432/app"
    settings = load_settings({"DATABASE_URL": url, "POSTGRES_HOST": "other"})
    assert settings.external_database_dsn == url


def test_lists_are_comma_separated_and_values_are_coerced() -> None:
    settings = load_settings(
        {"ROLES": " worker , scheduler ", "API_TOKENS": "a,b", "PORT": "9000", "LOG_LEVEL": "DEBUG"}
    )
    assert settings.roles == frozenset({Role.WORKER, Role.SCHEDULER})
    assert settings.api_tokens == ("a", "b")
    assert settings.port == 9000
    assert settings.log_level is LogLevel.DEBUG


def test_cli_overrides_win_over_the_environment() -> None:
    settings = load_settings({"PORT": "9000", "ROLES": "api"}, {"port": 7000, "roles": ["worker"]})
    assert (settings.port, settings.roles) == (7000, frozenset({Role.WORKER}))


def test_empty_values_mean_unset() -> None:
    assert load_settings({"DATABASE_URL": "", "PORT": ""}).uses_embedded_postgres


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORT": "eighty"}, "PORT: Expected `int`"),
        ({"PORT": "70000"}, "PORT: Expected `int` <= 65535"),
        ({"ROLES": "api,web"}, "ROLES: Invalid enum value 'web'; allowed: comma-separated subset"),
        ({"ROLES": ","}, "ROLES: at least one of api, worker, scheduler"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: Invalid enum value 'loud'; allowed: DEBUG, INFO"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY: Expected `int` >= 1"),
        (
            {"WORKER_TARGET_LAG_SECONDS": "-0.1"},
            "WORKER_TARGET_LAG_SECONDS: Expected `float` >= 0",
        ),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL: must start with postgresql://"),
        ({"OBJECT_STORE_URL": "ftp://x"}, "OBJECT_STORE_URL: must be s3://"),
        ({"DB_POOL_MIN_SIZE": "20", "DB_POOL_MAX_SIZE": "5"}, "DB_POOL_MIN_SIZE must not exceed"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_allowed(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ)
    assert message in str(raised.value)


def test_unknown_environment_variables_are_ignored() -> None:
    assert load_settings({"HOME": "/root", "PATH": "/bin"}).port == 8080


def test_http_limits_have_safe_defaults_and_read_their_variables() -> None:
    defaults = load_settings({})
    assert (defaults.http_max_header_bytes, defaults.http_max_headers) == (16_384, 100)
    assert (defaults.http_header_timeout_seconds, defaults.http_body_timeout_seconds) == (10, 30)
    assert (defaults.http_keepalive_timeout_seconds, defaults.http_max_connections) == (5, 1000)
    settings = load_settings({"HTTP_MAX_CONNECTIONS": "50", "HTTP_HEADER_TIMEOUT_SECONDS": "0.5"})
    assert (settings.http_max_connections, settings.http_header_timeout_seconds) == (50, 0.5)


def test_a_header_budget_below_one_kilobyte_is_refused() -> None:
    with pytest.raises(SettingsError, match="HTTP_MAX_HEADER_BYTES"):
        load_settings({"HTTP_MAX_HEADER_BYTES": "100"})


@pytest.mark.parametrize(
    "value",
    [
        "hooks.example.com",
        "https://example.com/",
        "ftp://example.com",
        "https://x.com/a/",
        "/hooks",
    ],
)
def test_public_url_must_be_absolute_http_without_a_trailing_slash(value: str) -> None:
    with pytest.raises(SettingsError, match="PUBLIC_URL: must be an absolute http"):
        load_settings({"PUBLIC_URL": value})


def test_public_url_accepts_a_host_or_a_prefix() -> None:
    assert load_settings({}).public_url is None
    for value in ("https://hooks.example.com", "http://10.0.0.5:8080/switchyard"):
        assert load_settings({"PUBLIC_URL": value}).public_url == value


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
            False,
        ),
        ({"OTEL_SERVICE_NAME": "switchyard-eu"}, False),  # the SDK's own setting: no endpoint
    ],
)
def test_tracing_is_on_only_with_an_otlp_endpoint_and_the_sdk_not_disabled(
    environ: dict[str, str], enabled: bool
) -> None:
    assert load_settings(environ).tracing_enabled is enabled

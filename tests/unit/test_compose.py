"""docker-compose.yml: PostgreSQL, MinIO and the api, worker and scheduler roles of one image.

No container engine runs where the suite runs and the compose-spec JSON schema is not available
offline, so the file is checked here against the essentials of the Compose specification
(https://github.com/compose-spec/compose-spec/blob/main/spec.md) as written: services and what
they depend on with which condition, health checks, one image build shared by every role,
ROLES per service (none running all three), the migration run once, the object store on MinIO,
and the settings each role gets accepted by `load_settings`. When `docker compose` is on PATH,
`docker compose config` validates the file too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Role, load_settings
from server.crypto.aead import parse_encryption_keys

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ROLE_SERVICES = ("api", "worker", "scheduler")
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# ${NAME:-default}: the value compose uses when NAME is not set.
SUBSTITUTION = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose gives it with no variables set (the placeholders)."""
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment is written as a mapping"
    return {name: SUBSTITUTION.sub(r"\2", str(value)) for name, value in environment.items()}


def test_the_file_has_only_keys_the_compose_spec_defines() -> None:
    document = _compose()
    top = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
    assert {key for key in document if not key.startswith("x-")} <= top
    service_keys = {
        "build", "command", "depends_on", "entrypoint", "environment", "healthcheck", "image",
        "ports", "pull_policy", "restart", "stop_grace_period", "volumes",
    }  # fmt: skip
    for name, service in _services().items():
        assert set(service) <= service_keys, name
        assert "image" in service or "build" in service, name
        assert service.get("restart", "no") in {"no", "always", "on-failure", "unless-stopped"}
    named_volumes = set(document.get("volumes", {}))
    for service in _services().values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in named_volumes, volume


def test_dependencies_name_services_with_conditions_the_spec_knows() -> None:
    services = _services()
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert spec["condition"] in DEPENDS_ON_CONDITIONS, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_one_image_is_built_once_and_shared_by_every_role() -> None:
    services = _services()
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["migrate"]
    build = services["migrate"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    image = services["migrate"]["image"]
    for role in ROLE_SERVICES:
        assert services[role]["image"] == image
        assert services[role]["pull_policy"] == "never"  # the built image, never a pulled one


def test_each_role_is_its_own_service_and_none_runs_all_roles() -> None:
    services = _services()
    for role in ROLE_SERVICES:
        settings = load_settings(_environment(services[role]))
        assert settings.roles == frozenset({Role(role)})
    for name, service in services.items():
        roles = _environment(service).get("ROLES")
        if roles is not None:
            assert load_settings({"ROLES": roles}).roles != frozenset(Role), name


def test_the_migration_runs_once_before_any_role_starts() -> None:
    services = _services()
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ROLE_SERVICES:
        depends_on = services[role]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["createbucket"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_health_check_and_roles_probe_ready() -> None:
    services = _services()
    one_shots = {"migrate", "createbucket"}
    for name, service in services.items():
        if name in one_shots:
            assert "healthcheck" not in service, name
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, name
    for role in ROLE_SERVICES:
        probe = " ".join(services[role]["healthcheck"]["test"])
        assert "http://127.0.0.1:8080/ready" in probe


def test_postgres_15_and_minio_hold_the_data_and_documents() -> None:
    services = _services()
    assert services["postgres"]["image"] == "postgres:15"
    assert services["minio"]["image"].startswith("minio/minio:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    bucket_script = " ".join(services["createbucket"]["entrypoint"])
    for role in (*ROLE_SERVICES, "migrate"):
        environment = _environment(services[role])
        settings = load_settings(environment)
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert settings.object_store_url is not None
        bucket = settings.object_store_url.removeprefix("s3://").split("/")[0]
        assert f"store/{bucket}" in bucket_script
        assert settings.database_url is not None
        assert "@postgres:5432/" in settings.database_url
        assert (
            environment["AWS_ACCESS_KEY_ID"] == _environment(services["minio"])["MINIO_ROOT_USER"]
        )


def test_secrets_come_from_the_environment_with_placeholders_that_say_so() -> None:
    services = _services()
    secret_names = {"API_TOKENS", "ENCRYPTION_KEYS", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"}
    text = COMPOSE.read_text()
    for name, service in services.items():
        for variable, value in service.get("environment", {}).items():
            if variable in secret_names or variable in {"POSTGRES_PASSWORD", "DATABASE_URL"}:
                match = SUBSTITUTION.search(str(value))
                assert match is not None, (name, variable)  # overridable from .env
                assert "CHANGE-ME" in match.group(2), (name, variable)
    keys = parse_encryption_keys(
        (_environment(services["api"])["ENCRYPTION_KEYS"],)
    )  # the placeholder has the right form, so `docker compose up` starts as it is
    assert keys.primary_key_id == "CHANGE-ME"
    assert "switchyard generate-key" in text


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` here; the structure is checked by the tests above",
)
def test_docker_compose_accepts_the_file() -> None:
    subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], check=True)

"""deploy/: every way to render it (`kubectl kustomize` of the base, each overlay, the migration
Job and each optional component on the scaled overlay) is valid for the stated Kubernetes
versions (custom resources against their CRDs' structure), passes the "restricted" Pod Security
Standard, checked rule by rule as the admission controller does
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), and holds together: the
roles each overlay promises, PgBouncer in transaction mode, secrets only by reference to the
keys secret.example.yaml documents, grace periods that cover the drain, autoscalers that own
the worker's replica count. The Dockerfile's user is the one the pods run as.

Rendering needs kubectl (Debian's works offline); without it these tests skip.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from config.settings import Role, Settings, load_settings
from server.health import ROUTES as HEALTH_ROUTES
from tests.support.kustomize import (
    DEPLOY,
    KUBERNETES_VERSIONS,
    ROOT,
    Objects,
    name_of,
    render,
    validate,
)

DOCKERFILE = ROOT / "Dockerfile"
NAMESPACE = "switchyard"
SERVER_CONTAINER = "switchyard"
# Every rendering deploy/ supports: (folder, components added on top).
RENDERINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base": ("base", ()),
    "single": ("overlays/single", ()),
    "scaled": ("overlays/scaled", ()),
    "migrate": ("migrate", ()),
    "scaled+keda-prometheus": ("overlays/scaled", ("keda-prometheus",)),
    "scaled+keda-postgresql": ("overlays/scaled", ("keda-postgresql",)),
    "scaled+hpa": ("overlays/scaled", ("hpa",)),
    "scaled+monitoring": ("overlays/scaled", ("monitoring",)),
    "single+monitoring": ("overlays/single", ("monitoring",)),
}
AUTOSCALED = ("scaled+keda-prometheus", "scaled+keda-postgresql", "scaled+hpa")
# Files in deploy/ that no kustomization lists, on purpose.
NOT_RENDERED = {
    "secret.example.yaml",  # applied by hand, so `kubectl apply -k` never overwrites secrets
    "components/hpa/prometheus-adapter-values.yaml",  # Helm values for prometheus-adapter
}
# Margin added to the drain in each grace period: SIGKILL must not land mid hand-back.
GRACE_MARGIN_SECONDS = 5
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
# Restricted: the only volume types a pod may use.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Baseline: the only sysctls a pod may set.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SECCOMP_ALLOWED = {"RuntimeDefault", "Localhost"}


def rendered(rendering: str) -> Objects:
    folder, components = RENDERINGS[rendering]
    return render(folder, components)


def of_kind(objects: Objects, kind: str) -> Objects:
    return [item for item in objects if item["kind"] == kind]


def named(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    matches = [item for item in of_kind(objects, kind) if item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_templates(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload."""
    for item in objects:
        if item["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
            yield name_of(item), item["spec"]["template"]
        elif item["kind"] == "CronJob":
            yield name_of(item), item["spec"]["jobTemplate"]["spec"]["template"]
        elif item["kind"] == "Pod":
            yield name_of(item), {"metadata": item["metadata"], "spec": item["spec"]}


def server_workloads(objects: Objects) -> list[dict[str, Any]]:
    """The Deployments and Jobs running the Switchyard image."""
    return [
        item
        for item in objects
        if item["kind"] in {"Deployment", "Job"}
        and item["spec"]["template"]["metadata"]["labels"].get("app") == "switchyard"
    ]


def server_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == SERVER_CONTAINER]
    found: dict[str, Any] = container
    return found


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in server_container(workload).get("env", [])}


def roles_of(workload: dict[str, Any]) -> set[Role]:
    value = env_of(workload)["ROLES"]["value"]
    return {Role(role) for role in value.split(",")}


def settings_of(objects: Objects) -> Settings:
    """The settings the ConfigMap gives (every value must be one the server accepts)."""
    return load_settings(named(objects, "ConfigMap", "switchyard")["data"])


def example_secrets() -> dict[str, dict[str, str]]:
    documents = yaml.safe_load_all((DEPLOY / "secret.example.yaml").read_text())
    return {item["metadata"]["name"]: item["stringData"] for item in documents}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *spec.get("containers", []),
        *spec.get("initContainers", []),
        *spec.get("ephemeralContainers", []),
    ]


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the "restricted" level (baseline rules included)."""
    problems = []
    pod_security = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    for sysctl in pod_security.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    problems.extend(_security_context_problems("pod", pod_security))
    if pod_security.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    for container in _containers(spec):
        problems.extend(_container_problems(container, pod_security))
    return problems


def _container_problems(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    name = f"container {container['name']}"
    context = container.get("securityContext", {})
    problems = _security_context_problems(name, context)
    if context.get("privileged"):
        problems.append(f"{name} is privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name} allowPrivilegeEscalation is not false")
    if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        problems.append(f"{name} runAsNonRoot is not true")
    if context.get("runAsUser") == 0:
        problems.append(f"{name} runAsUser is 0")
    seccomp = context.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
    if seccomp not in SECCOMP_ALLOWED:
        problems.append(f"{name} seccompProfile is {seccomp}, not RuntimeDefault or Localhost")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        problems.append(f"{name} does not drop ALL capabilities")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append(f"{name} adds capabilities {capabilities['add']}")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        problems.append(f"{name} uses a hostPort")
    if context.get("procMount", "Default") != "Default":
        problems.append(f"{name} procMount is not Default")
    return problems


def _security_context_problems(owner: str, context: dict[str, Any]) -> list[str]:
    problems = []
    if context.get("windowsOptions", {}).get("hostProcess"):
        problems.append(f"{owner} is a Windows host process")
    if context.get("seccompProfile", {}).get("type") == "Unconfined":
        problems.append(f"{owner} seccompProfile is Unconfined")
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        problems.append(f"{owner} appArmorProfile is Unconfined")
    selinux = context.get("seLinuxOptions", {})
    if selinux.get("type") not in {None, "", "container_t", "container_init_t", "container_kvm_t"}:
        problems.append(f"{owner} seLinuxOptions.type is {selinux['type']}")
    if selinux.get("user") or selinux.get("role"):
        problems.append(f"{owner} sets seLinuxOptions user or role")
    return problems


def _dockerfile_user() -> tuple[int, int]:
    """The numeric uid and gid of the final stage's USER."""
    final_stage = DOCKERFILE.read_text().split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)\s*$", final_stage, flags=re.MULTILINE)
    assert users, "the final stage of the Dockerfile sets no USER: it would run as root"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match is not None, f"USER {users[-1]} is not numeric uid:gid"
    return int(match.group(1)), int(match.group(2))


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendering_is_valid_for_the_stated_kubernetes_versions(version: str) -> None:
    # Each distinct object once: the component renderings repeat their overlay's objects.
    distinct: dict[str, tuple[str, dict[str, Any]]] = {}
    for rendering in sorted(RENDERINGS):
        objects = rendered(rendering)
        assert objects, rendering
        for item in objects:
            distinct.setdefault(json.dumps(item, sort_keys=True), (rendering, item))
    for rendering, item in distinct.values():
        try:
            validate(item, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{rendering}: {name_of(item)} is not valid for {version}: {error}")


def test_the_schema_checks_refuse_a_misspelt_field() -> None:
    deployment = named(rendered("scaled"), "Deployment", "switchyard-api")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[0])
    scaled_object = of_kind(rendered("scaled+keda-prometheus"), "ScaledObject")[0]
    broken = {**scaled_object, "spec": {**scaled_object["spec"], "maxReplicas": 3}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[0])
    advanced = scaled_object["spec"]["advanced"]
    behavior = advanced["horizontalPodAutoscalerConfig"]["behavior"]
    broken_behavior = {**behavior, "scaleDown": {**behavior["scaleDown"], "window": 1}}
    broken = {
        **scaled_object,
        "spec": {
            **scaled_object["spec"],
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": broken_behavior}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[0])


def test_every_manifest_file_is_rendered_by_some_kustomization() -> None:
    listed: set[Path] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        content = yaml.safe_load(kustomization.read_text())
        paths = [*content.get("resources", [])]
        paths += [patch["path"] for patch in content.get("patches", []) if "path" in patch]
        listed |= {(kustomization.parent / path).resolve() for path in paths}
    unlisted = {
        str(path.relative_to(DEPLOY))
        for path in DEPLOY.rglob("*.yaml")
        if path.name != "kustomization.yaml" and path.resolve() not in listed
    }
    assert unlisted == NOT_RENDERED


# -- the restricted Pod Security level ------------------------------------------------------


def test_the_namespace_enforces_the_restricted_level() -> None:
    labels = named(rendered("base"), "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_every_pod_passes_the_restricted_level_in_the_namespace(rendering: str) -> None:
    objects = rendered(rendering)
    for item in objects:
        if item["kind"] != "Namespace":
            assert item["metadata"].get("namespace") == NAMESPACE, name_of(item)
    for name, template in pod_templates(objects):
        assert restricted_violations(template["spec"]) == [], f"{rendering}: {name}"


def test_the_restricted_check_catches_what_the_level_refuses() -> None:
    # The pod spec deploy/ once had: non-root, and nothing else.
    old = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [{"name": "switchyard", "image": "switchyard:latest"}],
    }
    assert set(restricted_violations(old)) == {
        "container switchyard allowPrivilegeEscalation is not false",
        "container switchyard seccompProfile is None, not RuntimeDefault or Localhost",
        "container switchyard does not drop ALL capabilities",
    }
    worker = named(rendered("scaled"), "Deployment", "switchyard-worker")
    template = worker["spec"]["template"]["spec"]
    hostile = {
        **template,
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {
                **template["containers"][0],
                "ports": [{"containerPort": 8080, "hostPort": 8080}],
                "securityContext": {
                    **template["containers"][0]["securityContext"],
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                    "runAsUser": 0,
                },
            }
        ],
    }
    assert len(restricted_violations(hostile)) == 5


@pytest.mark.parametrize("rendering", ["single", "scaled", "migrate"])
def test_server_pods_mount_no_token_and_write_only_to_their_empty_dirs(rendering: str) -> None:
    objects = rendered(rendering)
    for workload in server_workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name_of(workload)
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        container = server_container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        # /tmp for temporary files, DATA_DIR (the image's /data) for the server's own.
        assert {"/tmp", "/data"} <= set(mounts), name_of(workload)  # noqa: S108 - mount path
        for mounted in mounts.values():
            assert "emptyDir" in volumes[mounted], name_of(workload)
    if rendering != "migrate":
        account = named(objects, "ServiceAccount", "switchyard")
        assert account["automountServiceAccountToken"] is False


def test_server_pods_run_as_the_dockerfiles_numeric_non_root_user() -> None:
    uid, gid = _dockerfile_user()
    assert uid != 0
    assert gid != 0
    assert re.search(rf"useradd\b[^\n]*--uid {uid}\b", DOCKERFILE.read_text())
    assert re.search(r"^ENV [^#]*DATA_DIR=/data", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for rendering in ("single", "scaled", "migrate"):
        for workload in server_workloads(rendered(rendering)):
            context = workload["spec"]["template"]["spec"]["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
            assert context["runAsNonRoot"] is True


# -- the overlays -------------------------------------------------------------------------------


def test_single_runs_every_role_in_one_pod_behind_the_api_service() -> None:
    objects = rendered("single")
    (workload,) = server_workloads(objects)
    assert workload["spec"]["replicas"] == 1
    assert roles_of(workload) == set(Role)
    assert not [item for item in objects if "pgbouncer" in item["metadata"]["name"]]
    # Straight to PostgreSQL: the session URL may stay unset (it defaults to DATABASE_URL).
    direct = env_of(workload)["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]
    assert direct["optional"] is True
    service = named(objects, "Service", "switchyard-api")
    assert _selects(service["spec"]["selector"], workload["spec"]["template"]["metadata"])


def test_scaled_runs_one_deployment_per_role_and_the_service_selects_only_the_api() -> None:
    objects = rendered("scaled")
    workloads = {item["metadata"]["name"]: item for item in server_workloads(objects)}
    assert set(workloads) == {f"switchyard-{role}" for role in Role}
    service = named(objects, "Service", "switchyard-api")
    for role in Role:
        workload = workloads[f"switchyard-{role}"]
        assert roles_of(workload) == {role}
        assert workload["spec"]["replicas"] >= 2, "a node drain never stops a role"
        selected = _selects(service["spec"]["selector"], workload["spec"]["template"]["metadata"])
        assert selected == (role == Role.API), role
        direct = env_of(workload)["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]
        assert direct["optional"] is False, "behind PgBouncer the session URL is required"


def test_scaled_puts_pgbouncer_in_transaction_mode_between_the_pods_and_postgresql() -> None:
    objects = rendered("scaled")
    deployment = named(objects, "Deployment", "switchyard-pgbouncer")
    service = named(objects, "Service", "switchyard-pgbouncer")
    assert _selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"])
    assert not any(
        _selects(service["spec"]["selector"], workload["spec"]["template"]["metadata"])
        for workload in server_workloads(objects)
    )
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (config_map,) = [
        item for item in of_kind(objects, "ConfigMap") if "pgbouncer.ini" in item.get("data", {})
    ]
    ini = configparser.ConfigParser()
    ini.read_string(config_map["data"]["pgbouncer.ini"])
    settings = ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert settings["unix_socket_dir"] == "", "no socket file on the read-only root"
    (port,) = container["ports"]
    assert int(settings["listen_port"]) == port["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # Its configuration is the mounted ConfigMap and the Secret's userlist, nothing else.
    (volume,) = spec["volumes"]
    sources = volume["projected"]["sources"]
    assert {"configMap": {"name": config_map["metadata"]["name"]}} in sources
    (secret,) = [source["secret"] for source in sources if "secret" in source]
    (mount,) = container["volumeMounts"]
    assert container["command"][-1] == f"{mount['mountPath']}/pgbouncer.ini"
    assert settings["auth_file"] == f"{mount['mountPath']}/{secret['items'][0]['path']}"
    assert secret["items"][0]["key"] in example_secrets()[secret["name"]]
    # The example Secret points DATABASE_URL at this Service and the session URL elsewhere.
    example = example_secrets()["switchyard"]
    pooled = urlsplit(example["DATABASE_URL"])
    assert (pooled.hostname, pooled.port) == (service["metadata"]["name"], port["containerPort"])
    assert urlsplit(example["DATABASE_DIRECT_URL"]).hostname != pooled.hostname
    database = pooled.path.lstrip("/")
    assert re.search(rf"^{database} = host=\S+ ", config_map["data"]["pgbouncer.ini"], re.M)


def _selects(selector: dict[str, str], metadata: dict[str, Any]) -> bool:
    labels = metadata.get("labels", {})
    return all(labels.get(key) == value for key, value in selector.items())


# -- settings and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize("rendering", ["single", "scaled", "migrate"])
def test_secrets_come_only_from_existing_secrets_by_documented_key(rendering: str) -> None:
    objects = rendered(rendering)
    assert of_kind(objects, "Secret") == [], "no secret value is ever rendered"
    examples = example_secrets()
    known = {name.upper() for name in Settings.__struct_fields__}
    for workload in server_workloads(objects):
        container = server_container(workload)
        assert container["envFrom"] == [{"configMapRef": {"name": "switchyard"}}]
        for entry in container["env"]:
            assert entry["name"] in known or entry["name"].startswith("AWS_"), entry["name"]
            if "valueFrom" not in entry:
                continue
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["key"] in examples[reference["name"]], entry["name"]
        required = {
            entry["name"]
            for entry in container["env"]
            if "valueFrom" in entry and not entry["valueFrom"]["secretKeyRef"].get("optional")
        }
        assert {"DATABASE_URL", "API_TOKENS", "ENCRYPTION_KEYS"} <= required


def test_the_migration_job_gets_the_pods_settings() -> None:
    job_env = env_of(named(rendered("migrate"), "Job", "switchyard-migrate"))
    for rendering in ("single", "scaled"):
        for workload in server_workloads(rendered(rendering)):
            pod_env = env_of(workload)
            assert set(pod_env) - {"ROLES"} == set(job_env), name_of(workload)


def test_published_documents_go_to_the_object_store_not_the_pod_disk() -> None:
    objects = rendered("base")
    data = named(objects, "ConfigMap", "switchyard")["data"]
    assert data["OBJECT_STORE_URL"].startswith("s3://")
    assert settings_of(objects).object_store_url == data["OBJECT_STORE_URL"]
    known = {name.upper() for name in Settings.__struct_fields__}
    unknown = {key for key in data if key not in known and not key.startswith("AWS_")}
    assert unknown == set(), "ConfigMap keys that no setting reads"


# -- probes, grace periods, disruption --------------------------------------------------------


@pytest.mark.parametrize("rendering", ["single", "scaled"])
def test_probes_ask_the_servers_health_and_readiness_routes(rendering: str) -> None:
    paths = {path for route in HEALTH_ROUTES for path in route.paths}
    for workload in server_workloads(rendered(rendering)):
        container = server_container(workload)
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert {"/ready", "/health"} <= paths
        ports = {port["name"] for port in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] in ports


@pytest.mark.parametrize("rendering", ["single", "scaled", *AUTOSCALED])
def test_the_grace_period_covers_the_drain_of_every_role_in_the_pod(rendering: str) -> None:
    """After the preStop pause, each role the process runs stops within SHUTDOWN_GRACE_SECONDS,
    one after the other (uvicorn's open requests, then the scheduler, then the worker's jobs):
    SIGKILL must not come before the worker has handed its unfinished jobs back."""
    objects = rendered(rendering)
    grace = settings_of(objects).shutdown_grace_seconds
    for workload in server_workloads(objects):
        pause = _pre_stop_seconds(server_container(workload))
        needed = pause + len(roles_of(workload)) * grace + GRACE_MARGIN_SECONDS
        period = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period >= needed, f"{name_of(workload)}: {period} s < {needed} s"


def _pre_stop_seconds(container: dict[str, Any]) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


@pytest.mark.parametrize("rendering", ["single", "scaled"])
def test_pods_behind_the_service_keep_serving_until_endpoints_drop_them(rendering: str) -> None:
    objects = rendered(rendering)
    selector = named(objects, "Service", "switchyard-api")["spec"]["selector"]
    for workload in server_workloads(objects):
        if _selects(selector, workload["spec"]["template"]["metadata"]):
            assert _pre_stop_seconds(server_container(workload)) >= 1, name_of(workload)


@pytest.mark.parametrize("rendering", ["single", "scaled", *AUTOSCALED])
def test_every_deployment_has_a_budget_that_never_blocks_a_drain(rendering: str) -> None:
    objects = rendered(rendering)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        template = deployment["spec"]["template"]["metadata"]
        covering = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], template)]
        assert len(covering) == 1, name_of(deployment)
        assert covering[0]["spec"]["maxUnavailable"] >= 1, name_of(deployment)


def test_egress_to_the_cloud_metadata_address_is_denied_and_the_rest_allowed() -> None:
    objects = rendered("scaled")
    (policy,) = of_kind(objects, "NetworkPolicy")
    spec = policy["spec"]
    assert "Egress" in spec["policyTypes"]
    for workload in server_workloads(objects):  # the pods that run workflow steps
        assert _selects(
            spec["podSelector"]["matchLabels"], workload["spec"]["template"]["metadata"]
        )
    blocks = [
        peer["ipBlock"] for rule in spec["egress"] for peer in rule["to"] if "ipBlock" in peer
    ]
    allowing_metadata = [
        block
        for block in blocks
        if METADATA_ADDRESS in ipaddress.ip_network(block["cidr"])
        and not any(METADATA_ADDRESS in ipaddress.ip_network(c) for c in block.get("except", []))
    ]
    assert allowing_metadata == []
    assert any(block["cidr"] == "0.0.0.0/0" for block in blocks), "other egress stays open"
    assert all("ports" not in rule for rule in spec["egress"])


# -- the migration Job and the image ------------------------------------------------------------


def test_the_migration_job_runs_migrate_and_can_be_replaced_for_a_new_image() -> None:
    job = named(rendered("migrate"), "Job", "switchyard-migrate")
    assert "generateName" not in job["metadata"]  # `kubectl apply` needs a fixed name
    spec = job["spec"]
    assert spec["ttlSecondsAfterFinished"] > 0  # a finished Job clears itself away
    assert server_container(job)["args"] == ["migrate"]
    assert spec["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    for rendering in ("single", "scaled"):
        assert of_kind(rendered(rendering), "Job") == [], "an applied Job could never change"


@pytest.mark.parametrize("rendering", ["single", "scaled", "migrate"])
def test_every_server_container_runs_the_one_configured_image(rendering: str) -> None:
    component = yaml.safe_load((DEPLOY / "components/image/kustomization.yaml").read_text())
    image = component["images"][0]
    for workload in server_workloads(rendered(rendering)):
        assert server_container(workload)["image"] == f"{image['newName']}:{image['newTag']}"


# -- autoscaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rendering", AUTOSCALED)
def test_an_autoscaler_owns_the_worker_deployments_replica_count(rendering: str) -> None:
    objects = rendered(rendering)
    (scaler,) = of_kind(objects, "ScaledObject") + of_kind(objects, "HorizontalPodAutoscaler")
    target = scaler["spec"]["scaleTargetRef"]
    worker = named(objects, "Deployment", target["name"])
    assert roles_of(worker) == {Role.WORKER}
    assert target.get("kind", "Deployment") == "Deployment"
    # Left in the manifest, `kubectl apply` would reset what the autoscaler chose.
    assert "replicas" not in worker["spec"]
    spec = scaler["spec"]
    low = spec.get("minReplicaCount", spec.get("minReplicas"))
    high = spec.get("maxReplicaCount", spec.get("maxReplicas"))
    assert 1 <= low < high
    # Scaled in, a worker drains: slowly, after the queue has been quiet for a while.
    behavior = spec.get("behavior") or spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    for other in ("switchyard-api", "switchyard-scheduler"):
        assert named(objects, "Deployment", other)["spec"]["replicas"] >= 2


def test_the_keda_postgresql_scaler_reads_the_workers_own_session_url() -> None:
    objects = rendered("scaled+keda-postgresql")
    (scaled_object,) = of_kind(objects, "ScaledObject")
    target = scaled_object["spec"]["scaleTargetRef"]
    worker = named(objects, "Deployment", target["name"])
    assert target["envSourceContainerName"] == SERVER_CONTAINER
    for trigger in scaled_object["spec"]["triggers"]:
        assert trigger["type"] == "postgresql"
        assert trigger["metadata"]["connectionFromEnv"] in env_of(worker)
        float(trigger["metadata"]["targetQueryValue"])

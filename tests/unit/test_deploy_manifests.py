"""deploy/: the Kubernetes manifests are valid for the stated Kubernetes versions and pass the
"restricted" Pod Security Standard, checked here rule by rule as the admission controller does
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), with the NetworkPolicy,
disruption budgets, migration Job and object store they need; and the Dockerfile's user is the
one the pods run as.

The objects are read from the YAML files as written (no tool needed); when kubectl is on PATH
the kustomize output is checked too (namespace and image applied to every object).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
# The oldest Kubernetes minor still in common support and a recent one; the schemas are bundled
# with kubernetes-validate, so this runs offline.
KUBERNETES_VERSIONS = ("1.29.0", "1.34.0")
NAMESPACE = "switchyard"
ROLES = ("api", "worker", "scheduler")
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
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


def _yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def _written_objects() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/ as written (kustomization files excluded)."""
    objects = []
    for path in _yaml_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None and document.get("kind") not in KUSTOMIZE_KINDS:
                objects.append(document)
    return objects


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [item for item in _written_objects() if item["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    matches = [item for item in _of_kind(kind) if item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload in deploy/."""
    for item in _written_objects():
        if item["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
            yield f"{item['kind']}/{item['metadata']['name']}", item["spec"]["template"]
        elif item["kind"] == "CronJob":
            template = item["spec"]["jobTemplate"]["spec"]["template"]
            yield f"CronJob/{item['metadata']['name']}", template
        elif item["kind"] == "Pod":
            yield f"Pod/{item['metadata']['name']}", {"spec": item["spec"]}


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
def test_every_object_is_valid_for_the_stated_kubernetes_versions(version: str) -> None:
    objects = _written_objects()
    assert len(objects) >= 10
    for item in objects:
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{item['kind']}/{item['metadata']['name']}"
            pytest.fail(f"{name} is not valid for Kubernetes {version}: {error.message}")


def test_the_kustomization_lists_every_manifest_of_its_folder() -> None:
    for folder in (DEPLOY / "base", DEPLOY / "migrate"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        files = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert set(kustomization["resources"]) == files, folder
        assert kustomization["namespace"] == NAMESPACE


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    deployment = _named("Deployment", "switchyard-api")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


# -- the restricted Pod Security level ------------------------------------------------------


def test_the_namespace_enforces_the_restricted_level() -> None:
    labels = _named("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_passes_the_restricted_level() -> None:
    templates = dict(_pod_templates())
    assert set(templates) == {
        "Deployment/switchyard-api",
        "Deployment/switchyard-worker",
        "Deployment/switchyard-scheduler",
        "Job/switchyard-migrate",
    }
    for name, template in templates.items():
        assert restricted_violations(template["spec"]) == [], name


def test_the_restricted_check_catches_what_the_level_refuses() -> None:
    # The pod spec deploy/ had before: non-root, and nothing else.
    old = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [{"name": "switchyard", "image": "switchyard:latest"}],
    }
    assert set(restricted_violations(old)) == {
        "container switchyard allowPrivilegeEscalation is not false",
        "container switchyard seccompProfile is None, not RuntimeDefault or Localhost",
        "container switchyard does not drop ALL capabilities",
    }
    template = _named("Deployment", "switchyard-worker")["spec"]["template"]["spec"]
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


def test_pods_mount_no_token_and_write_only_to_their_empty_dirs() -> None:
    for name, template in _pod_templates():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in _containers(spec):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            # /tmp for temporary files, DATA_DIR (the image's /data) for the server's own.
            assert {"/tmp", "/data"} <= set(mounts), name  # noqa: S108 - a mount path
            for mounted in mounts.values():
                assert "emptyDir" in volumes[mounted], name
    account = _named("ServiceAccount", "switchyard")
    assert account["automountServiceAccountToken"] is False


def test_pods_run_as_the_dockerfiles_numeric_non_root_user() -> None:
    uid, gid = _dockerfile_user()
    assert uid != 0
    assert gid != 0
    assert re.search(rf"useradd\b[^\n]*--uid {uid}\b", DOCKERFILE.read_text())
    for name, template in _pod_templates():
        context = template["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), name
        assert context["runAsNonRoot"] is True, name
    assert re.search(r"^ENV [^#]*DATA_DIR=/data", DOCKERFILE.read_text(), flags=re.MULTILINE)


# -- what a highly available deployment needs ------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_every_role_has_a_deployment_and_a_disruption_budget() -> None:
    budgets = _of_kind("PodDisruptionBudget")
    for role in ROLES:
        deployment = _named("Deployment", f"switchyard-{role}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "ROLES", "value": role} in container["env"]
        covering = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, role
        budget = covering[0]["spec"]
        assert budget.get("minAvailable", 0) >= 1 or "maxUnavailable" in budget
        assert deployment["spec"]["replicas"] > budget.get("minAvailable", 0), role


def test_egress_to_the_cloud_metadata_address_is_denied_and_the_rest_allowed() -> None:
    policies = _of_kind("NetworkPolicy")
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert "Egress" in spec["policyTypes"]
    for _, template in _pod_templates():
        assert _selects(spec["podSelector"], template["metadata"]["labels"])
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


def test_the_migration_job_runs_migrate_and_can_be_replaced_for_a_new_image() -> None:
    job = _named("Job", "switchyard-migrate")
    assert "generateName" not in job["metadata"]  # `kubectl apply` needs a fixed name
    spec = job["spec"]
    assert spec["ttlSecondsAfterFinished"] > 0  # a finished Job clears itself away
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert spec["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    assert not any("migrate" in resource for resource in base["resources"])
    for folder in (DEPLOY, DEPLOY / "migrate"):  # one image setting for both
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert any(c.endswith("image") for c in kustomization["components"]), folder


def test_published_documents_go_to_the_object_store_not_the_pod_disk() -> None:
    data = _named("ConfigMap", "switchyard")["data"]
    assert data["OBJECT_STORE_URL"].startswith("s3://")
    settings = load_settings(data)  # every value is one the server accepts
    assert settings.object_store_url == data["OBJECT_STORE_URL"]
    known = {name.upper() for name in Settings.__struct_fields__}
    unknown = {key for key in data if key not in known and not key.startswith("AWS_")}
    assert unknown == set(), "ConfigMap keys that no setting reads"


def test_every_workload_reads_the_secret_and_the_config() -> None:
    secret = _named("Secret", "switchyard")
    assert {"DATABASE_URL", "API_TOKENS", "ENCRYPTION_KEYS"} <= set(secret["stringData"])
    for name, template in _pod_templates():
        sources = template["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "switchyard"}} in sources, name
        assert {"configMapRef": {"name": "switchyard"}} in sources, name


# -- kustomize output, when kubectl is there ---------------------------------------------------


@pytest.mark.parametrize("folder", ["", "migrate"])
def test_the_kustomize_output_is_valid_and_namespaced(folder: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the files were checked as written above")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    objects = [item for item in yaml.safe_load_all(rendered) if item]
    assert objects
    image = yaml.safe_load((DEPLOY / "image" / "kustomization.yaml").read_text())["images"][0]
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSIONS[-1], strict=True)
        if item["kind"] != "Namespace":
            assert item["metadata"]["namespace"] == NAMESPACE, item["metadata"]["name"]
        template = item.get("spec", {}).get("template")
        if template is not None:
            assert restricted_violations(template["spec"]) == []
            for container in template["spec"]["containers"]:
                assert container["image"] == f"{image['newName']}:{image['newTag']}"

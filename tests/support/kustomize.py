"""Render deploy/ with `kubectl kustomize` (offline) and validate what comes out.

Built-in kinds are validated against the Kubernetes JSON schemas kubernetes-validate bundles;
the custom resources deploy/ ships (KEDA's ScaledObject, the Prometheus Operator's PodMonitor
and PrometheusRule) against the structural schemas in `crd_schemas/`, written from those
projects' CRDs for the fields deploy/ may use, with unknown fields refused.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
# The oldest Kubernetes minor still in common support and a recent one; the schemas are bundled
# with kubernetes-validate, so this runs offline.
KUBERNETES_VERSIONS = ("1.29.0", "1.34.0")
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
# How the HPA behaviour inside a ScaledObject is checked: as the HPA's own field.
HPA_API = ("autoscaling/v2", "HorizontalPodAutoscaler")

Objects = list[dict[str, Any]]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: deploy/ cannot be rendered here")
    return path


@functools.cache
def _render_folder(folder: Path) -> str:
    return subprocess.run(
        [kubectl(), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def render(target: str, components: tuple[str, ...] = ()) -> Objects:
    """The objects of deploy/<target>, with deploy/components/<name> added on top (through a
    throw-away kustomization, the way a user's own overlay adds them)."""
    if not components:
        text = _render_folder(DEPLOY / target)
    else:
        text = _render_with_components(target, components)
    return [item for item in yaml.safe_load_all(text) if item]


@functools.cache
def _render_with_components(target: str, components: tuple[str, ...]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        # kustomize refuses absolute paths: point at deploy/ relatively from the temp folder.
        to_deploy = os.path.relpath(DEPLOY, folder)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"{to_deploy}/{target}"],
            "components": [f"{to_deploy}/components/{name}" for name in components],
        }
        Path(folder, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return _render_folder(Path(folder))


def name_of(item: dict[str, Any]) -> str:
    return f"{item['kind']}/{item['metadata']['name']}"


def validate(item: dict[str, Any], version: str) -> None:
    """Raise (kubernetes_validate.ValidationError or jsonschema.ValidationError) unless `item`
    is valid for Kubernetes `version`, or for its custom resource's schema."""
    key = (item["apiVersion"], item["kind"])
    if key not in CUSTOM_SCHEMAS:
        kubernetes_validate.validate(item, version, strict=True)
        return
    jsonschema.validate(item, _custom_schema(CUSTOM_SCHEMAS[key]))
    behavior = (
        item["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    )
    if behavior is not None:  # KEDA passes it to the HPA it creates as is
        hpa = {
            "apiVersion": HPA_API[0],
            "kind": HPA_API[1],
            "metadata": {"name": item["metadata"]["name"]},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "x"},
                "maxReplicas": 1,
                "behavior": behavior,
            },
        }
        kubernetes_validate.validate(hpa, version, strict=True)


@functools.cache
def _custom_schema(file: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / file).read_text())
    return schema

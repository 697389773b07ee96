"""deploy/k8s/ checked by kubernetes-validate (the Kubernetes OpenAPI schemas,
strict: unknown fields are errors) and against the rest of the repository."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from schemas.policy import load_policy
from services.exporter.config import parse_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes still maintained when this was written, and the newest
# the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in _documents(p)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_k8s_manifest_valid(path: Path, version: str) -> None:
    """Every resource validates against the Kubernetes schema, unknown fields included."""
    for doc in _documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_validator_rejects_unknown_field() -> None:
    """The validator is strict: a misspelled field (hostPid) fails."""
    broken = copy.deepcopy(_resources()[("DaemonSet", "ocellus-node")])
    broken["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_k8s_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/k8s` applies every file validated here."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def _compose_caps() -> dict[str, set[str]]:
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    default = re.compile(r"^\$\{\w+:-(\w+)\}$")  # "${OCELLUS_BPF_CAP:-BPF}" -> BPF
    return {
        name: {default.sub(r"\1", cap) for cap in service.get("cap_add", [])}
        for name, service in compose["services"].items()
    }


def test_k8s_node_capabilities_match_compose() -> None:
    """The DaemonSet's containers add exactly the capabilities the compose file
    gives the same services, drop all others, and none is privileged."""
    pod = _resources()[("DaemonSet", "ocellus-node")]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    compose = _compose_caps()
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security.get("privileged", False) is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert set(security["capabilities"].get("add", [])) == compose[container["name"]]


def test_k8s_configmaps_load_in_ocellus() -> None:
    """The policies parse as Tetragon TracingPolicies and the exporter config as
    the exporter's YAML, with Ocellus's own loaders."""
    resources = _resources()
    policies = resources[("ConfigMap", "ocellus-policies")]["data"]
    assert policies
    for name, text in policies.items():
        load_policy(text, source=name)
    exporter = resources[("ConfigMap", "ocellus-exporter")]["data"]["exporter.yaml"]
    assert parse_config(yaml.safe_load(exporter)).sinks

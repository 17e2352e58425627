"""The deployment files pass their ecosystems' own linters (installed by `make install`):
hadolint on the Dockerfile, kubernetes-validate on deploy/k8s (with the sasl component
applied) against a recent Kubernetes, and compose.yaml against the Compose
specification's JSON schema as check-jsonschema ships it (no download at test time).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import (
    EXAMPLE_SECRET,
    K8S,
    ROOT,
    kustomization,
    one,
    sasl_pod_spec,
)

KUBERNETES_VERSION = "1.37.0"
BIN = Path(sys.executable).parent


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / name
    if not tool.exists():
        pytest.fail(f"{name} is not installed in {BIN}: run `make install`", pytrace=False)
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args[0]} failed:\n{result.stdout}{result.stderr}"


def test_dockerfile_passes_hadolint():
    # Every finding fails the test, down to style.
    assert_passes(run_tool("hadolint", "--no-color", "--failure-threshold", "style",
                           "Dockerfile"))


def test_manifests_are_valid_kubernetes_objects():
    files = [str(K8S / name) for name in (*kustomization()["resources"], EXAMPLE_SECRET)]
    assert_passes(run_tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *files))


def test_statefulset_with_the_sasl_component_is_valid(tmp_path):
    patched = tmp_path / "statefulset-sasl.yaml"
    patched.write_text(yaml.safe_dump(with_sasl(one("StatefulSet"))))
    assert_passes(run_tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION,
                           str(patched)))


def test_compose_file_matches_the_compose_specification():
    assert_passes(run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                           "compose.yaml"))


def with_sasl(statefulset: dict[str, Any]) -> dict[str, Any]:
    """The StatefulSet as kustomize builds it with the sasl component: lists merged by name."""
    merged = copy.deepcopy(statefulset)
    pod, patch = merged["spec"]["template"]["spec"], sasl_pod_spec()
    pod.setdefault("securityContext", {}).update(patch.get("securityContext", {}))
    pod.setdefault("volumes", []).extend(patch.get("volumes", []))
    containers = {c["name"]: c for c in pod["containers"]}
    for extra in patch["containers"]:
        target = containers[extra["name"]]
        for key in ("env", "volumeMounts"):
            target.setdefault(key, []).extend(extra.get(key, []))
    return merged

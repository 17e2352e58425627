"""Behavioural checks of the deployment files: deploy/k8s, compose.yaml and the Dockerfile.

There is no Docker engine or Kubernetes here. The linters (tests/unit/test_deploy_lint.py)
check that the files are well formed; these check what the service relies on and a
linter cannot know: setting names, identity (POD_NAME), probes on the health endpoints,
the grace period against SHUTDOWN_TIMEOUT_S, selectors, the password read from a file,
the image's health check and build context.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = "kustomization.yaml"
EXAMPLE_SECRET = "secret.example.yaml"

SASL = K8S / "sasl"
SETTING_NAMES = frozenset(env_name(field) for field in dataclasses.fields(Settings))
# A secret setting may instead name a file holding it (NAME_FILE, see app/config.py).
SECRET_FILE_NAMES = frozenset(env_name(field) + "_FILE" for field in dataclasses.fields(Settings)
                              if field.metadata.get("secret"))
ENV_NAMES = SETTING_NAMES | SECRET_FILE_NAMES

# The broker's defaults for group.min.session.timeout.ms and group.max.session.timeout.ms:
# a JoinGroup with a session timeout outside them is refused.
BROKER_SESSION_TIMEOUT_RANGE_MS = (6_000, 1_800_000)


# --- loading -------------------------------------------------------------------------


def load_yaml(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def manifest_files() -> set[str]:
    """The manifests kustomize must apply: every YAML file but these two."""
    return {p.name for p in K8S.glob("*.y*ml")} - {KUSTOMIZATION, EXAMPLE_SECRET}


@cache
def kustomization() -> dict[str, Any]:
    (doc,) = load_yaml(K8S / KUSTOMIZATION)
    return doc


@cache
def resources() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        docs.extend(load_yaml(K8S / name))
    return docs


def one(kind: str) -> dict[str, Any]:
    found = [doc for doc in resources() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in the kustomization, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    return one("StatefulSet")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "expected exactly one container"
    return containers[0]


@cache
def sasl_patch(kind: str) -> dict[str, Any]:
    """The sasl component's patch of this kind (a strategic merge patch)."""
    (component,) = load_yaml(SASL / KUSTOMIZATION)
    assert component["kind"] == "Component"
    docs = [doc for patch in component["patches"] for doc in load_yaml(SASL / patch["path"])]
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    assert found["metadata"]["name"] == one(kind)["metadata"]["name"], "patches another object"
    return found


def sasl_pod_spec() -> dict[str, Any]:
    return sasl_patch("StatefulSet")["spec"]["template"]["spec"]


def sasl_container() -> dict[str, Any]:
    (patched,) = [c for c in sasl_pod_spec()["containers"] if c["name"] == container()["name"]]
    return patched


def sasl_configmap() -> dict[str, Any]:
    return sasl_patch("ConfigMap")


def config_data() -> dict[str, Any]:
    return one("ConfigMap")["data"]


def pod_labels() -> dict[str, str]:
    labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert labels, "the pod template has no labels"
    return labels


def http_port() -> int:
    ports = [p for p in container().get("ports", []) if p.get("name") == "http"]
    assert len(ports) == 1, "the container needs exactly one port named http"
    return ports[0]["containerPort"]


def resolve_port(ref: int | str) -> int:
    """A probe's or Service's port, by name or number, as a container port number."""
    ports = container().get("ports", [])
    if isinstance(ref, str) and not ref.isdigit():
        matches = [p["containerPort"] for p in ports if p.get("name") == ref]
        assert matches, f"no container port named {ref!r}"
        return matches[0]
    assert int(ref) in [p["containerPort"] for p in ports], f"{ref} is not a container port"
    return int(ref)


def settings_from_configmap():
    """The Settings a pod gets: the ConfigMap plus POD_NAME (fails on a bad value)."""
    return load_settings([], {**config_data(), "POD_NAME": "txingest-0"})


def security_setting(name: str) -> Any:
    """A securityContext field as the container gets it (container wins over pod)."""
    for context in (container().get("securityContext", {}), pod_spec().get("securityContext", {})):
        if name in context:
            return context[name]
    return None


@cache
def compose() -> dict[str, Any]:
    (doc,) = load_yaml(ROOT / "compose.yaml")
    return doc


def app_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("build") == "."}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["NAME=value", ...] form
        return dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def pom_kafka_version() -> str:
    root = ET.parse(ROOT / "tools" / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = root.findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version, "no <kafka.version> in tools/kafka/pom.xml"
    return version.strip()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments skipped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, args = full.partition(" ")
        instructions.append((word.upper(), args.strip()))
    return instructions


def last(instruction: str) -> str | None:
    found = [args for word, args in dockerfile_instructions() if word == instruction]
    return found[-1] if found else None


# --- deploy/k8s ----------------------------------------------------------------------


def test_kustomization_lists_exactly_the_manifests():
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == manifest_files()
    assert EXAMPLE_SECRET not in listed
    assert (K8S / EXAMPLE_SECRET).is_file()


def test_manifests_are_namespace_agnostic_with_one_kind_per_file():
    assert "namespace" not in kustomization()
    for name in sorted(manifest_files()):
        docs = load_yaml(K8S / name)
        assert docs, f"{name} is empty"
        assert len({doc["kind"] for doc in docs}) == 1, f"{name} mixes kinds"
        for doc in docs:
            assert "namespace" not in doc["metadata"], f"{name} sets a namespace"


def test_statefulset_selects_its_pods_and_names_its_service():
    spec = one("StatefulSet")["spec"]
    assert spec["serviceName"] == one("Service")["metadata"]["name"]
    selector = spec["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels().items()


def test_image_tag_is_the_project_version():
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert container()["image"] == f"txingest:{version}"


def test_pod_name_comes_from_the_downward_api():
    env = {e["name"]: e for e in container().get("env", [])}
    assert "POD_NAME" in env, "POD_NAME must be set: it is the group.instance.id"
    assert "value" not in env["POD_NAME"], "a fixed POD_NAME would be shared by every pod"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_settings_come_from_the_configmap():
    refs = [e["configMapRef"]["name"] for e in container().get("envFrom", [])
            if "configMapRef" in e]
    assert refs == [one("ConfigMap")["metadata"]["name"]]


def test_every_env_name_is_a_setting():
    names = set(config_data()) | {e["name"] for e in container().get("env", [])}
    names |= set(sasl_configmap()["data"]) | {e["name"] for e in sasl_container()["env"]}
    unknown = names - ENV_NAMES
    assert not unknown, f"not setting names: {sorted(unknown)}"


def test_configmap_values_are_strings_and_valid_settings():
    data = config_data()
    assert data and all(isinstance(v, str) for v in data.values()), "ConfigMap values: strings"
    settings = settings_from_configmap()  # raises ConfigError on a bad value
    assert settings.http_port == http_port()
    low, high = BROKER_SESSION_TIMEOUT_RANGE_MS
    assert low <= settings.session_timeout_ms <= high


def test_service_links_are_off():
    # A Service named e.g. "http" would otherwise inject HTTP_PORT=tcp://...
    assert pod_spec().get("enableServiceLinks") is False


def test_probes_use_the_health_endpoints_on_the_http_port():
    c = container()
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz"
    assert live["path"] == "/healthz"
    assert resolve_port(ready["port"]) == http_port()
    assert resolve_port(live["port"]) == http_port()


def test_liveness_outlasts_a_transaction():
    probe = container()["livenessProbe"]
    window_s = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    settings = settings_from_configmap()
    # /healthz fails only after HEALTH_STALL_S; the probe adds its own window on top.
    assert window_s + settings.health_stall_s >= settings.transaction_timeout_ms / 1000
    assert probe.get("timeoutSeconds", 1) < probe.get("periodSeconds", 10)


def test_grace_period_is_longer_than_the_shutdown_timeout():
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > settings_from_configmap().shutdown_timeout_s


def test_pod_runs_as_the_image_user():
    user = (last("USER") or "").split(":")[0]
    assert user.isdigit(), f"Dockerfile USER {user!r}: use a numeric uid"
    assert int(user) == security_setting("runAsUser")


def test_prometheus_annotations_point_at_metrics():
    annotations = one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(http_port())
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_selects_the_pods_on_the_http_port():
    spec = one("Service")["spec"]
    assert spec["selector"] and spec["selector"].items() <= pod_labels().items()
    (port,) = [p for p in spec["ports"] if p.get("name") == "http"]
    assert resolve_port(port.get("targetPort", port["port"])) == http_port()


def test_pdb_selects_the_pods():
    selector = one("PodDisruptionBudget")["spec"]["selector"]
    assert not selector.get("matchExpressions")
    assert selector["matchLabels"] and selector["matchLabels"].items() <= pod_labels().items()


# --- deploy/k8s/sasl: the password as a file -------------------------------------------


def test_no_kafka_password_in_any_environment():
    for env in (container().get("env", []), sasl_container()["env"]):
        assert "KAFKA_SASL_PASSWORD" not in {e["name"] for e in env}
    assert "KAFKA_SASL_PASSWORD" not in config_data()
    assert "KAFKA_SASL_PASSWORD" not in sasl_configmap()["data"]


def test_sasl_component_reads_the_password_from_the_mounted_secret(tmp_path):
    (secret,) = load_yaml(K8S / EXAMPLE_SECRET)
    env = {e["name"]: e for e in sasl_container()["env"]}
    password_file = Path(env["KAFKA_SASL_PASSWORD_FILE"]["value"])
    (mount,) = [m for m in sasl_container()["volumeMounts"]
                if password_file.is_relative_to(m["mountPath"])]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in sasl_pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    relative = str(password_file.relative_to(mount["mountPath"]))
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == relative]
    user_ref = env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert user_ref["name"] == secret["metadata"]["name"]
    assert {item["key"], user_ref["key"]} <= set(secret["stringData"])
    # The pod's settings with the component: SASL on, credentials from the Secret.
    (tmp_path / "password").write_text(secret["stringData"][item["key"]] + "\n")
    environ = {**config_data(), **sasl_configmap()["data"], "POD_NAME": "txingest-0",
               "KAFKA_SASL_USERNAME": secret["stringData"][user_ref["key"]],
               "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password")}
    settings = load_settings([], environ)
    assert settings.kafka_security_protocol.startswith("SASL")
    assert settings.kafka_sasl_password == secret["stringData"][item["key"]]


def test_sasl_secret_files_are_readable_by_the_pod_user_only():
    (volume,) = [v for v in sasl_pod_spec()["volumes"] if "secret" in v]
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0, "others may read the password"
    assert mode & 0o040, "the group (fsGroup) must read it: the pod does not run as root"
    assert sasl_pod_spec()["securityContext"]["fsGroup"] == security_setting("runAsGroup")


# --- compose.yaml --------------------------------------------------------------------


def test_compose_app_replicas_have_distinct_pod_names():
    names = [environment(svc).get("POD_NAME") for svc in app_services().values()]
    assert len(names) >= 2 and all(names), "every replica needs a POD_NAME"
    assert len(set(names)) == len(names)


def test_compose_app_environment_names_are_settings():
    for name, svc in app_services().items():
        env = environment(svc)
        unknown = env.keys() - ENV_NAMES
        assert not unknown, f"{name}: not setting names: {sorted(unknown)}"
        load_settings([], env)  # raises ConfigError on a bad value


def test_compose_kafka_image_is_the_pinned_version():
    version = pom_kafka_version()
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{version}"
    for name, svc in compose()["services"].items():
        image = svc.get("image", "")
        if image.startswith("apache/kafka:"):
            assert image == f"apache/kafka:{version}", name


def test_compose_start_order():
    services = compose()["services"]
    assert services["kafka"].get("healthcheck"), "service_healthy needs a healthcheck"
    assert services["init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, svc in app_services().items():
        condition = svc["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", name


# --- Dockerfile and .dockerignore ----------------------------------------------------


def test_dockerfile_entrypoint_is_the_console_script_in_exec_form():
    entrypoint = last("ENTRYPOINT")
    assert entrypoint and entrypoint.startswith("["), "shell form: python would not be PID 1"
    with (ROOT / "pyproject.toml").open("rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    (program, *_) = json.loads(entrypoint)
    assert scripts[program] == "app.__main__:main"


def test_image_installs_only_the_runtime_lock_with_hashes():
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    locks = set(re.findall(r"-r\s+(\S+)", runs))
    assert locks and {Path(lock).name for lock in locks} == {"requirements.lock"}
    assert runs.count("--require-hashes") == len(re.findall(r"-r\s", runs))
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text(encoding="utf-8")


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_asks_healthz_on_the_port_in_http_port(status, healthy):
    healthcheck = last("HEALTHCHECK") or ""
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    assert command[0] == "python", "the image's python runs the check"
    with health_server(status) as (port, paths):
        env = {**os.environ, "HTTP_PORT": str(port)}
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                                timeout=30, check=False)
    assert paths == ["/healthz"]
    assert (result.returncode == 0) is healthy


def test_build_context_has_what_the_dockerfile_copies_and_nothing_local():
    sources = [src for word, args in dockerfile_instructions() if word == "COPY"
               and "--from" not in args for src in args.split()[:-1]]
    assert sources
    for source in sources:
        assert not docker_ignored(source.rstrip("/")), f"{source} is copied but ignored"
    for local in (".venv", ".cache", "results", "bench/results", "chaos/results", ".git",
                  "tests", "app/__pycache__"):
        assert docker_ignored(local), f"{local} would be sent to the Docker build"


# --- helpers for the image checks ----------------------------------------------------


@contextmanager
def health_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server answering every GET with ``status``; yields its port and paths."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            paths.append(self.path)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def docker_ignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or a parent wins."""
    ignored = False
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatchcase(prefix, pattern) or (pattern.startswith("**/")
               and fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:])) for prefix in prefixes):
            ignored = not negate
    return ignored


def _quantity_bytes(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    return int(text[:-2]) * units[text[-2:]] if text[-2:] in units else int(text)


def test_the_spool_is_on_its_own_volume_bigger_than_its_budget():
    settings = settings_from_configmap()
    mounts = {m["name"]: m["mountPath"] for m in container().get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec().get("volumes", [])}
    assert "spool" in mounts and "emptyDir" in volumes["spool"]
    assert str(settings.spool_dir).startswith(mounts["spool"].rstrip("/") + "/")
    limit = _quantity_bytes(volumes["spool"]["emptyDir"]["sizeLimit"])
    assert limit > settings.spool_max_bytes, "past its sizeLimit the kubelet evicts the pod"
    for name, service in app_services().items():
        env = {**compose()["x-app"]["environment"], **service["environment"]}
        volume = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        assert any(env["SPOOL_DIR"].startswith(path + "/") for path in volume), name

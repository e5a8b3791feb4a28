"""The Kubernetes base in deploy/: it renders, validates, runs locked down, and its config is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

import exporter
from exporter.cli import build_parser
from exporter.config import ENV_KEYS, ENV_PREFIX, settings_from_args
from exporter.settings import DEFAULT_LISTEN_ADDRESS, split_listen_address

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
CORE_KINDS = ("ConfigMap", "Deployment", "Service")
# The oldest Kubernetes minor most managed clusters still run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET_NAME = "nats-exporter-credentials"


def kustomize(directory: Path) -> dict[str, dict[str, Any]]:
    """``kubectl kustomize <directory>``, by kind."""
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents), "one resource of each kind expected"
    return by_kind


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """``kubectl kustomize deploy/``, by kind."""
    return kustomize(DEPLOY)


@pytest.fixture(scope="module")
def pod_spec(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = rendered["Deployment"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec["containers"]
    return dict(only)


def test_the_base_renders_every_resource(rendered):
    assert set(rendered) == {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "PrometheusRule"}
    assert {doc["metadata"].get("namespace") for doc in rendered.values()} == {"monitoring"}
    assert rendered["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert rendered["PrometheusRule"]["apiVersion"] == "monitoring.coreos.com/v1"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", CORE_KINDS)
def test_core_resources_pass_kubernetes_validate(rendered, kind, version):
    try:
        kubernetes_validate.validate(rendered[kind], version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{kind} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_the_pod_runs_locked_down(pod_spec, container):
    assert pod_spec["automountServiceAccountToken"] is False
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_user_is_the_images_user(container):
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    uid = container["securityContext"]["runAsUser"]
    gid = container["securityContext"]["runAsGroup"]
    assert f"\nUSER {uid}:{gid}\n" in dockerfile


def test_probes_and_ports(rendered, container):
    port = container["ports"][0]
    assert port["name"] == "metrics"
    assert port["containerPort"] == split_listen_address(DEFAULT_LISTEN_ADDRESS)[1]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (service_port,) = rendered["Service"]["spec"]["ports"]
    assert (service_port["name"], service_port["targetPort"]) == ("metrics", "metrics")


def test_requests_and_limits_are_set(container):
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert set(resources[section]) == {"cpu", "memory"}, section


def test_the_service_and_the_service_monitor_select_the_exporter(rendered):
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = rendered["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = rendered["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_credentials_come_from_an_optional_secret(pod_spec, container):
    secret_env = {
        env["name"]: env["valueFrom"]["secretKeyRef"] for env in container["env"] if "valueFrom" in env
    }
    assert secret_env, "the Deployment reads NATS credentials from a Secret"
    for name, ref in secret_env.items():
        assert ref["name"] == SECRET_NAME
        assert ref["optional"] is True, name
        # Every variable is one the exporter reads.
        assert name.removeprefix(ENV_PREFIX) in ENV_KEYS, name
    secret_volumes = [volume["secret"] for volume in pod_spec["volumes"] if "secret" in volume]
    assert secret_volumes == [{"secretName": SECRET_NAME, "optional": True, "defaultMode": 0o440}]


def test_the_config_argument_points_into_the_configmap(rendered, pod_spec, container):
    (argument,) = [arg for arg in container["args"] if arg.startswith("--config=")]
    config_path = PurePosixPath(argument.removeprefix("--config="))
    volume_by_name = {volume["name"]: volume for volume in pod_spec["volumes"]}
    mounts = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == config_path.parent]
    assert len(mounts) == 1
    config_map = volume_by_name[mounts[0]["name"]]["configMap"]["name"]
    assert config_map == rendered["ConfigMap"]["metadata"]["name"]
    assert config_path.name in rendered["ConfigMap"]["data"]


def test_the_image_tag_is_the_package_version():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    (image,) = kustomization["images"]
    assert image == {"name": "nats-jetstream-exporter", "newTag": exporter.__version__}


def test_the_configmap_config_is_valid_with_the_secrets_environment(rendered, container, tmp_path):
    config = yaml.safe_load(rendered["ConfigMap"]["data"]["config.yaml"])
    assert config["dead_letter_streams"] == ["AI_DLQ"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered["ConfigMap"]["data"]["config.yaml"], encoding="utf-8")
    password = "pod-env-password-Zq7"
    injected = {env["valueFrom"]["secretKeyRef"]["key"]: env["name"] for env in container["env"]}
    environment = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    # What the Deployment injects when the Secret holds a user and a password.
    environment |= {injected["user"]: "exporter", injected["password"]: password}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "AI_DLQ" in result.stdout
    assert "nats://nats.nats.svc.cluster.local:4222" in result.stdout
    assert password not in result.stdout + result.stderr


# --- the sharded variant: deploy/components/sharded -------------------------------------------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """An overlay of a user's own, as docs/deployment.md shows it: the base plus the sharded component."""
    overlay = tmp_path_factory.mktemp("overlay")
    component = DEPLOY / "components" / "sharded"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(DEPLOY, overlay)],
                "components": [os.path.relpath(component, overlay)],
            }
        ),
        encoding="utf-8",
    )
    return kustomize(overlay)


def test_the_sharded_variant_runs_a_statefulset_instead_of_the_deployment(sharded):
    assert set(sharded) == {"ConfigMap", "StatefulSet", "Service", "ServiceMonitor", "PrometheusRule"}
    assert {doc["metadata"].get("namespace") for doc in sharded.values()} == {"monitoring"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", ["StatefulSet", "Service"])
def test_sharded_resources_pass_kubernetes_validate(sharded, kind, version):
    try:
        kubernetes_validate.validate(sharded[kind], version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"sharded {kind} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_the_statefulset_runs_the_base_pod_with_its_shard(rendered, sharded):
    statefulset = sharded["StatefulSet"]["spec"]
    base_template = rendered["Deployment"]["spec"]["template"]
    template = statefulset["template"]
    (container,) = template["spec"]["containers"]
    (base_container,) = base_template["spec"]["containers"]
    # The same pod, written once: only the shard's two variables are added.
    *inherited, pod_index, shard = container["env"]
    assert inherited == base_container["env"]
    assert {**container, "env": inherited} == base_container
    assert {**template["spec"], "containers": []} == {**base_template["spec"], "containers": []}
    assert (
        pod_index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert shard["name"] == f"{ENV_PREFIX}SHARD"
    assert ENV_KEYS["SHARD"] == "collection.shard"
    # The count in the shard value is the number of replicas.
    assert shard["value"] == f"$({pod_index['name']})/{statefulset['replicas']}"
    assert statefulset["replicas"] > 1
    assert statefulset["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_every_replicas_shard_value_is_a_valid_setting(sharded):
    statefulset = sharded["StatefulSet"]["spec"]
    *_, pod_index, shard = statefulset["template"]["spec"]["containers"][0]["env"]
    replicas = statefulset["replicas"]
    for ordinal in range(replicas):
        # What Kubernetes substitutes for $(POD_INDEX) in the replica with this ordinal.
        value = shard["value"].replace(f"$({pod_index['name']})", str(ordinal))
        settings = settings_from_args(build_parser().parse_args([]), {shard["name"]: value})
        assert settings.collection.shard == (ordinal, replicas)


def test_the_governing_service_is_the_scraped_headless_service(sharded):
    service = sharded["Service"]
    assert sharded["StatefulSet"]["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    # One Service for the ServiceMonitor: Prometheus scrapes each replica once, through its endpoint.
    selector = sharded["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    pod_labels = sharded["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

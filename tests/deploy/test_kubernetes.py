"""The Kubernetes manifests (deploy/kubernetes) validate against the Kubernetes schema without a
cluster, agree with server/settings.py, and their probes ask health services a real server answers.

Rendering: ``kubectl kustomize`` (kustomize built into kubectl, which the project's machines have
installed as an apt package; no kustomize binary installs from PyPI or npm, and PyPI's "kustomize"
is an unrelated reimplementation). Without kubectl the rendered checks skip, and every file of the
base and the overlay is still validated on its own (patches are partial objects, so not those).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api.servicer import SERVICE_NAME
from server.app import LIVENESS_SERVICE
from server.metrics import Metrics
from server.settings import ENV_PREFIX, ServerSettings, load_settings
from tests.conftest import REPO_ROOT, write_fake_classifier
from tests.servers import InProcessServer

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
BASE, OVERLAY = KUBERNETES / "base", KUBERNETES / "overlays" / "example"
# The oldest Kubernetes the manifests promise (native gRPC probes are GA since 1.27) and the newest
# schema kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KUBECTL = shutil.which("kubectl")
# Health services the server registers: "" and the API service say "models loaded" (readiness);
# "liveness" says "the process answers" (startup, liveness).
READINESS_SERVICES = {"", SERVICE_NAME}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed: `apt-get install kubectl`")
    result = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(resources: list[dict]) -> dict[str, dict]:
    kinds = [r["kind"] for r in resources]
    assert len(kinds) == len(set(kinds)), f"one of each kind expected: {kinds}"
    return {r["kind"]: r for r in resources}


def validate(resource: dict) -> None:
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{resource['kind']}/{resource['metadata']['name']}"
            pytest.fail(f"{name} is not valid Kubernetes {version}: {exc.message} at {list(exc.path)}")


def whole_resources(folder: Path) -> list[Path]:
    """The files of a kustomization that hold complete objects (its resources, not its patches)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [folder / name for name in kustomization["resources"] if (folder / name).is_file()]


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_every_resource_file_is_valid_kubernetes(folder):
    files = whole_resources(folder)
    assert files
    for path in files:
        for resource in documents(path):
            validate(resource)


@pytest.fixture(scope="module", params=[BASE, OVERLAY], ids=["base", "overlay"])
def rendered(request) -> dict[str, dict]:
    return by_kind(render(request.param))


def test_the_rendered_kustomization_is_valid_kubernetes(rendered):
    for resource in rendered.values():
        validate(resource)
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    } <= set(rendered)


def container(rendered) -> dict:
    containers = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def environment(rendered) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(rendered)["env"]}


def settings_of(rendered) -> ServerSettings:
    return load_settings([], environ=environment(rendered))


def test_every_imageserve_variable_is_a_real_setting(rendered):
    names = {f.name for f in dataclasses.fields(ServerSettings) if not f.metadata.get("file_only")}
    unknown = [
        k
        for k in environment(rendered)
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in names
    ]
    assert not unknown, f"not settings (see python -m server --help): {unknown}"
    settings = settings_of(rendered)  # and every value parses and passes the settings' checks
    assert container(rendered)["command"] == ["python", "-m", "server"]
    assert settings.model_root == Path("/models") and settings.state_dir == Path("/state")


def test_ports_and_probes_match_the_settings(rendered):
    settings, server = settings_of(rendered), container(rendered)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    defaults = ServerSettings()
    assert (settings.port, settings.metrics_port) == (defaults.port, defaults.metrics_port)
    annotations = rendered["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["grpc"]["port"] == settings.port, probe
    assert server["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert server["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert server["readinessProbe"]["grpc"].get("service", "") in READINESS_SERVICES
    service = rendered["Service"]["spec"]
    assert service["clusterIP"] == "None"  # headless: clients balance per call
    assert {p["targetPort"] for p in service["ports"]} == set(ports)
    assert {p["port"] for p in service["ports"]} == set(ports.values())


def test_shutdown_fits_in_the_termination_grace_period(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    pre_stop_s = int(container(rendered)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop_s + settings_of(rendered).shutdown_grace_s < pod["terminationGracePeriodSeconds"]


def test_selectors_volumes_and_autoscaling_fit_together(rendered):
    deployment = rendered["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"], rendered["PodDisruptionBudget"]["spec"]["selector"]):
        assert selector["matchLabels"].items() <= labels.items()
    assert rendered["Service"]["spec"]["selector"].items() <= labels.items()

    pvc = rendered["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(rendered)["volumeMounts"]}
    models = mounts[str(settings_of(rendered).model_root)]
    assert (
        models["readOnly"]
        and volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    )

    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # kubectl apply resets replicas to the Deployment's value; keep that the HPA's floor.
    assert deployment["spec"]["replicas"] == hpa["minReplicas"] <= hpa["maxReplicas"]
    metrics = Metrics()
    metrics.track_load(lambda: [])
    exported = {family.name for family in metrics.registry.collect()}
    for metric in hpa["metrics"]:
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exported


def test_the_probes_ask_services_a_running_server_answers(tmp_path):
    """The Deployment's environment on a real server: startup/liveness, then readiness, SERVING."""
    rendered = by_kind(render(OVERLAY))
    write_fake_classifier(tmp_path / "models")
    env = environment(rendered) | {
        "IMAGESERVE_MODEL_ROOT": str(tmp_path / "models"),
        "IMAGESERVE_STATE_DIR": str(tmp_path / "state"),
        "IMAGESERVE_HOST": "127.0.0.1",
        "IMAGESERVE_PORT": "0",
        "IMAGESERVE_METRICS_PORT": "0",
    }
    server = InProcessServer(load_settings([], environ=env)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                service = container(rendered)[probe]["grpc"].get("service", "")
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING, (probe, service)
    finally:
        server.stop()

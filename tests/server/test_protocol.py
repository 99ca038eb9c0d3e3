"""Protocol hygiene: health, reflection, message size, UNAVAILABLE while loading, SIGTERM drains,
generated code up to date."""

from __future__ import annotations

import filecmp
import importlib.metadata
import re
import signal
import subprocess
import sys
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from protos import generate
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.conftest import CLASSIFIER, FEATURES, REPO_ROOT
from tests.images import encode
from tests.servers import InProcessServer, SubprocessServer, loopback_args, test_settings, wait_for

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(channel, service: str = "") -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        .status
    )


def test_health_goes_from_not_serving_to_serving_and_loading_is_unavailable(model_root, photos):
    server = InProcessServer(test_settings(model_root)).start(wait_loaded=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            # Listening at once, while the models load (the MobileNetV2 takes seconds).
            assert health_status(channel) == NOT_SERVING
            # Every model on disk is "loading, retry" (UNAVAILABLE) until it is served, never "unknown":
            # clients retry UNAVAILABLE only. The second model in load order waits longest.
            for name in (CLASSIFIER, FEATURES):
                request = pb.ExtractFeaturesRequest(
                    model=pb.ModelSpec(name=name), images=[photos["chelsea.png"]]
                )
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ExtractFeatures(request)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
                assert "loading" in caught.value.details()
            wait_for(lambda: health_status(channel) == SERVING, 120, what="SERVING")
            assert health_status(channel, "imageserve.v1.ImageModelService") == SERVING
            assert health_status(channel, f"model/{CLASSIFIER}") == SERVING
            assert health_status(channel, f"model/{FEATURES}") == SERVING
    finally:
        server.stop()


def test_liveness_does_not_depend_on_models(tmp_path):
    """A Kubernetes liveness probe on "liveness" passes with no model at all; readiness ("") does not."""
    from server import healthcheck
    from server.app import LIVENESS_SERVICE

    (tmp_path / "models").mkdir()
    server = InProcessServer(test_settings(tmp_path / "models")).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            assert health_status(channel, LIVENESS_SERVICE) == SERVING
            assert health_status(channel) == NOT_SERVING  # nothing to serve: not ready, but alive
        assert healthcheck.main(["--address", server.address, "--service", LIVENESS_SERVICE]) == 0
        assert healthcheck.main(["--address", server.address]) == 1
    finally:
        server.stop()


def test_reflection_lists_the_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"imageserve.v1.ImageModelService", "grpc.health.v1.Health"} <= services
    from google.protobuf.descriptor_pool import DescriptorPool

    service = DescriptorPool(database).FindServiceByName("imageserve.v1.ImageModelService")
    assert {"Classify", "ExtractFeatures", "ListModels", "GetModelStatus", "StartFineTune"} <= {
        m.name for m in service.methods
    }


def test_oversized_message_is_resource_exhausted_and_the_server_lives_on(model_root, photos):
    server = InProcessServer(test_settings(model_root, max_message_bytes=1024 * 1024)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            noise = encode(np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8))
            assert len(noise) > 1024 * 1024
            with pytest.raises(grpc.RpcError) as caught:
                stub.Classify(
                    pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[noise]), timeout=30
                )
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ok = stub.Classify(
                pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.jpg"]])
            )
            assert ok.model.version == 1
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_then_exits_zero(real_model_root, photos):
    server = SubprocessServer(  # python -m server: a real model
        loopback_args(real_model_root, "--shutdown-grace-s", "30", "--max-batch-size", "64")
    ).start()
    try:
        server.wait_serving()
        request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["coffee.jpg"]] * 64)
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            started = threading.Barrier(5)

            def slow_call():
                started.wait()
                return stub.Classify(request, timeout=120)

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(slow_call) for _ in range(4)]
                started.wait()

                def all_in_flight():
                    status = stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER), timeout=10)
                    return status.versions[0].stats.requests >= 4

                wait_for(all_in_flight, 60, what="4 requests in flight")
                server.process.send_signal(signal.SIGTERM)
                results = [f.result(timeout=120) for f in futures]
            assert all(len(r.results) == 64 for r in results)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Classify(
                    pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["coffee.jpg"]]),
                    timeout=10,
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.process.wait(60) == 0
        assert "shutting down" in server.log_text() and "stopped" in server.log_text()
    finally:
        server.kill()


def test_generated_code_is_up_to_date(tmp_path):
    """Byte for byte, version stamp included: the generator is pinned by the lock (requirements/*.txt),
    so a fresh install regenerates exactly what is committed; a lock refresh that moves grpcio-tools
    makes this fail until the code is regenerated with it."""
    # In a subprocess: protoc's compiler and TensorFlow's protobuf do not share a process safely.
    result = subprocess.run(
        [sys.executable, "-m", "protos.generate", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert written
    tools = importlib.metadata.version("grpcio-tools")
    for path in written:
        committed = generate.PROTO_ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python -m protos.generate"
        assert filecmp.cmp(path, committed, shallow=False), (
            f"{committed} is stale for grpcio-tools {tools} (the lock's, if installed by scripts/test): "
            "run python -m protos.generate"
        )


def test_the_client_requires_the_grpcio_and_protobuf_its_generated_code_needs():
    """The generated modules refuse to import on an older grpcio (GRPC_GENERATED_VERSION) or protobuf
    (the gencode version): pyproject's floors, which a client library install resolves, must cover them."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        floors[requirement.name] = min(
            (Version(s.version) for s in requirement.specifier if s.operator in (">=", "~=", "==")),
            default=None,
        )
    generated_grpc = Version(pb_grpc.GRPC_GENERATED_VERSION)
    assert floors["grpcio"] is not None and floors["grpcio"] >= generated_grpc, (
        f"pyproject allows grpcio {floors['grpcio']}; the generated code needs >= {generated_grpc}"
    )
    gencode = re.search(r"Protobuf Python Version: (\S+)", (Path(pb.__file__)).read_text()).group(1)
    assert floors["protobuf"] >= Version(gencode), (
        f"pyproject allows protobuf {floors['protobuf']}; the gencode is {gencode}"
    )

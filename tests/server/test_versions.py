"""Version policies (latest N, all, specific) and version labels select the right version."""

from __future__ import annotations

import grpc
import pytest

from graphs import publish
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.conftest import FAKE_FEATURES
from tests.fake_backend import write_fake_version
from tests.servers import InProcessServer, test_settings, wait_for

NAME = "vgg16"


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    for version in (1, 2, 3):
        write_fake_version(root, NAME, version, **FAKE_FEATURES)
    return root


def write_config(path, body: str):
    path.write_text(body)
    return path


def serve(root, config=None, **overrides):
    settings = test_settings(root, config=config, **overrides)
    if config is not None:
        from server.settings import reload_model_configs

        settings = reload_model_configs(settings)
    return InProcessServer(settings).start()


def served(stub) -> dict[int, str]:
    status = stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME))
    return {v.version: pb.ModelVersionStatus.State.Name(v.state) for v in status.versions}


def answering_version(stub, **choice) -> int:
    request = pb.ExtractFeaturesRequest(
        model=pb.ModelSpec(name=NAME, **choice), images=[publish.sample_png()]
    )
    return stub.ExtractFeatures(request, timeout=30).model.version


@pytest.mark.parametrize(
    "config, expected_versions, default",
    [
        (None, {3}, 3),
        ("[models.vgg16]\nversion_policy = 'latest'\nlatest = 2\n", {2, 3}, 3),
        ("[models.vgg16]\nversion_policy = 'all'\n", {1, 2, 3}, 3),
        ("[models.vgg16]\nversion_policy = 'specific'\nversions = [1, 2]\n", {1, 2}, 2),
    ],
    ids=["default-latest-1", "latest-2", "all", "specific"],
)
def test_version_policy(three_versions, tmp_path, config, expected_versions, default):
    config_path = write_config(tmp_path / "imageserve.toml", config) if config else None
    server = serve(three_versions, config_path)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            assert served(stub) == {v: "AVAILABLE" for v in expected_versions}
            assert answering_version(stub) == default
            for version in (1, 2, 3):
                if version in expected_versions:
                    assert answering_version(stub, version=version) == version
                else:
                    with pytest.raises(grpc.RpcError) as caught:
                        answering_version(stub, version=version)
                    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                    assert (
                        f"available versions: {', '.join(map(str, sorted(expected_versions)))}"
                        in caught.value.details()
                    )
    finally:
        server.stop()


def test_version_labels_and_their_reload(three_versions, tmp_path):
    config = write_config(
        tmp_path / "imageserve.toml",
        "[models.vgg16]\nversion_policy = 'all'\nversion_labels = { stable = 2, canary = 3 }\n",
    )
    server = serve(three_versions, config)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            assert answering_version(stub, version_label="stable") == 2
            assert answering_version(stub, version_label="canary") == 3
            status = stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME))
            assert dict(status.version_labels) == {"stable": 2, "canary": 3}
            with pytest.raises(grpc.RpcError) as caught:
                answering_version(stub, version_label="beta")
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert "labels: canary, stable" in caught.value.details()

            # Promote: edit the file; the server re-reads it on its next poll, no restart.
            write_config(
                config, "[models.vgg16]\nversion_policy = 'all'\nversion_labels = { stable = 3, old = 1 }\n"
            )
            wait_for(lambda: answering_version(stub, version_label="stable") == 3, 30, what="label reload")
            assert answering_version(stub, version_label="old") == 1
    finally:
        server.stop()


def test_label_pointing_at_an_unserved_version(three_versions, tmp_path):
    config = write_config(tmp_path / "imageserve.toml", "[models.vgg16]\nversion_labels = { stable = 1 }\n")
    server = serve(three_versions, config)  # latest-1 policy: only version 3 is served
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                answering_version(stub, version_label="stable")
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert (
                "no version 1 (label 'stable') being served; available versions: 3" in caught.value.details()
            )
    finally:
        server.stop()

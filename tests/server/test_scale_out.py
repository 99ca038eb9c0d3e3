"""Several server processes can share one model root: each picks up a new version by itself."""

from __future__ import annotations

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.servers import SubprocessServer, copy_version, loopback_args, wait_for

NAME = "vgg16"

# Two `python -m server` processes (TensorFlow each): the fleet's checks are the slow tier's.
pytestmark = pytest.mark.slow


def test_two_servers_on_one_root_both_pick_up_a_new_version(tmp_path, features_export, photos):
    root = tmp_path / "shared-models"
    copy_version(features_export.path, root, NAME, 1)
    servers = [
        SubprocessServer(
            loopback_args(root, "--poll-interval-s", "0.5", "--state-dir", str(tmp_path / f"state-{i}"))
        ).start()
        for i in range(2)
    ]
    try:
        for server in servers:
            server.wait_serving()
        request = pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=NAME), images=[photos["chelsea.png"]])
        channels = [grpc.insecure_channel(server.address) for server in servers]
        stubs = [pb_grpc.ImageModelServiceStub(channel) for channel in channels]
        assert [stub.ExtractFeatures(request).model.version for stub in stubs] == [1, 1]
        copy_version(features_export.path, root, NAME, 2)
        for stub in stubs:
            wait_for(
                lambda stub=stub: stub.ExtractFeatures(request).model.version == 2,
                60,
                what="version 2 on each server",
            )
        for channel in channels:
            channel.close()
    finally:
        for server in servers:
            assert server.terminate() == 0

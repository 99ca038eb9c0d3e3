"""Reliability fixtures: a model root with the small classifier and feature model, and a server."""

from __future__ import annotations

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.servers import InProcessServer, copy_version, test_settings

CLASSIFIER = "mobilenet_v2_keras"
FEATURES = "vgg16"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, classifier_export, features_export):
    root = tmp_path_factory.mktemp("reliability-models")
    copy_version(classifier_export.path, root, CLASSIFIER, 1)
    copy_version(features_export.path, root, FEATURES, 1)
    return root


@pytest.fixture(scope="module")
def server(model_root):
    running = InProcessServer(test_settings(model_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)

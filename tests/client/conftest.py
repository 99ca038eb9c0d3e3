"""Client fixtures: exported models -> a model root -> running servers -> clients.

Package-scoped: the test modules of tests/client share two servers (loading models takes seconds)."""

from __future__ import annotations

import socket

import grpc
import numpy as np
import pytest

from client import ModelClient
from tests.images import decode_rgb, encode
from tests.servers import InProcessServer, copy_version, test_settings

CLASSIFIER = "mobilenet_v2_keras"
FEATURES = "vgg16"
#: Limits of the server that makes the client split calls: 3 images or 1 MiB per request.
LIMITED = dict(max_images_per_request=3, max_message_bytes=1024 * 1024)


@pytest.fixture(scope="package")
def model_root(tmp_path_factory, classifier_export, features_export):
    root = tmp_path_factory.mktemp("client-models")
    copy_version(classifier_export.path, root, CLASSIFIER, 1)
    copy_version(features_export.path, root, FEATURES, 1)
    return root


@pytest.fixture(scope="package")
def server(model_root):
    running = InProcessServer(test_settings(model_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="package")
def limited_server(model_root):
    """A server that takes at most 3 images or 1 MiB per request."""
    running = InProcessServer(test_settings(model_root, **LIMITED)).start()
    yield running
    running.stop()


@pytest.fixture(scope="package")
def client(server):
    with ModelClient(server.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def limited_client(limited_server):
    with ModelClient(limited_server.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def crops(photos):
    """Eight distinct small photos (PNG)."""
    coffee, chelsea = decode_rgb(photos["coffee.png"]), decode_rgb(photos["chelsea.png"])
    pixels = [coffee[40 * i : 40 * i + 150, 50 * i : 50 * i + 150] for i in range(4)]
    pixels += [chelsea[30 * i : 30 * i + 150, 60 * i : 60 * i + 150] for i in range(4)]
    return [encode(np.ascontiguousarray(p)) for p in pixels]


class Recorder(grpc.UnaryUnaryClientInterceptor):
    """Records every request the client sends (and runs ``after`` on each response)."""

    def __init__(self, after=None) -> None:
        self.requests: list[tuple[str, object]] = []
        self.after = after

    def intercept_unary_unary(self, continuation, details, request):
        self.requests.append((details.method.rsplit("/", 1)[-1], request))
        outcome = continuation(details, request)
        if self.after is not None:
            self.after(details.method, outcome)
        return outcome

    def sent(self, method: str) -> list:
        return [request for name, request in self.requests if name == method]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

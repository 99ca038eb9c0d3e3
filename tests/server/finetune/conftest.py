"""Fine-tuning fixtures: real digits -> a model root with the vgg16 base -> a server with a state
directory and a data root -> a stub. Each test module gets its own server and job store."""

from __future__ import annotations

import itertools

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import Digits, load_digit_images
from tests.servers import InProcessServer, copy_version, test_settings

BASE = "vgg16"


@pytest.fixture(scope="session")
def digits() -> Digits:
    """1497 training and 300 held-out test digits (stratified), 32x32 RGB PNG."""
    return load_digit_images()


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, features_export):
    """A model root serving the features-only VGG16 (32x32, random weights) as vgg16 v1."""
    root = tmp_path_factory.mktemp("finetune-models")
    copy_version(features_export.path, root, BASE, 1)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("finetune-data")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("finetune-state")


@pytest.fixture(scope="module")
def server(model_root, data_root, state_dir):
    running = InProcessServer(test_settings(model_root, state_dir=state_dir, data_root=data_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


# --- the job store on PostgreSQL (test_store.py, test_replicas.py) ---------------------------------

_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres) -> str:
    """An empty database of its own for each test, on the session's PostgreSQL server."""
    return postgres.fresh_database(f"test_{next(_databases)}")

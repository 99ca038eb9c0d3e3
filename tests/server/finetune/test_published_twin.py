"""A fine-tuned version is published with its checked ONNX twin when its model runs on ONNX Runtime
(``runtime = auto``, the default, or ``onnxruntime``): every replica serves it without converting it;
with the chance gate, a head that learned nothing is not published."""

from __future__ import annotations

import json
import random

import grpc
import numpy as np
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.settings import ModelConfig
from tests.answers import assert_same_probabilities
from tests.server.finetune.conftest import BASE
from tests.server.finetune.helpers import start, upload, wait_done
from tests.servers import InProcessServer, copy_version, test_settings


@pytest.fixture(scope="module")
def root(tmp_path_factory, features_export):
    root = tmp_path_factory.mktemp("twin-models")
    copy_version(features_export.path, root, BASE, 1)
    return root


@pytest.fixture(scope="module")
def stub(root, tmp_path_factory):
    on_onnx = {"digits_onnx": ModelConfig(runtime="onnxruntime")}  # the base itself stays on TensorFlow
    server = InProcessServer(
        test_settings(root, state_dir=tmp_path_factory.mktemp("twin-state"), models=on_onnx)
    )
    server.start()
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)
    server.stop()


def test_the_twin_is_published_with_the_version_and_served_without_a_conversion(stub, root, digits):
    dataset = upload(stub, *digits.subset(8, classes=("0", "1", "2")), name="three")
    job, _events = wait_done(
        stub, start(stub, "digits_onnx", dataset_id=dataset.dataset_id, epochs=20).job_id
    )
    assert job.state == pb.SUCCEEDED, job.error
    version = root / "digits_onnx" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert (version / "network.onnx").is_file() and manifest["onnx"]["file"] == "network.onnx"
    assert manifest["onnx"]["check"]["max_feature_error"] <= 1e-5
    # This server holds its base: it serves the version as a head on the base's features.
    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="digits_onnx"), timeout=30).versions[0]
    assert status.runtime_detail.startswith("head on vgg16 v1's features"), status
    # A server without its base loads it whole, on ONNX Runtime from the published twin (no conversion).
    from server.model import load_saved_model
    from server.runtime import RuntimeOptions

    whole = load_saved_model("digits_onnx", 1, version, RuntimeOptions(runtime="onnxruntime"))
    assert whole.runtime == "onnxruntime" and "twin exported with the version" in whole.runtime_detail
    # The head on the shared base answers what the whole version answers (the product's promise).
    images = list(digits.test_images[:4])
    served = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name="digits_onnx"), images=images, top_k=3), timeout=30
    )
    rows = np.zeros((len(images), 3), np.float32)
    for row, result in zip(rows, served.results, strict=True):
        for prediction in result.predictions:
            row[prediction.class_id] = prediction.score
    assert_same_probabilities(rows, whole.run("classify", images).outputs)
    whole.close()


def test_a_head_at_chance_is_not_published(stub, root, digits):
    """Labels shuffled: nothing to learn. Without min_val_accuracy, the gate is chance (+0.05)."""
    images, labels = digits.subset(8, classes=("0", "1"))
    shuffled = labels[:]
    random.Random(3).shuffle(shuffled)
    dataset = upload(stub, images, shuffled, name="noise")
    job, _events = wait_done(stub, start(stub, "noise", dataset_id=dataset.dataset_id, epochs=5).job_id)
    assert job.state == pb.FAILED
    assert "is not above chance (" in job.error and "nothing was published" in job.error
    assert not (root / "noise").exists() or not [p for p in (root / "noise").iterdir() if p.name.isdigit()]

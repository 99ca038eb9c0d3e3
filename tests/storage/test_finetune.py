"""Fine-tuning with the model root in a bucket: the job's version is uploaded with its marker last, and
the server that ran the job serves it (SUCCEEDED means served, as with a local root)."""

from __future__ import annotations

import json

import grpc
import pytest

from model_format.layout import PUBLISHED_MARKER
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import load_digit_images, upload, wait_done
from tests.servers import InProcessServer, test_settings
from tests.storage.conftest import bucket_path, publish_version, s3

BASE = "base"
CLASSES = ("0", "1", "2")


@pytest.fixture
def server(bucket_url, features_export, tmp_path):
    """A server on a bucket holding the suite's features-only VGG16 (32x32, with its ONNX twin, which
    the training worker uses for the frozen base's features)."""
    publish_version(features_export.path, bucket_url, BASE, 1)
    running = InProcessServer(
        test_settings(bucket_url, state_dir=tmp_path / "state", runtime="tensorflow")
    ).start()
    yield running
    running.stop()


def test_a_fine_tuned_version_is_published_to_the_bucket_and_served(server, bucket_url):
    images, labels = load_digit_images().subset(per_class=8, classes=CLASSES)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)
        dataset = upload(stub, images, labels, name="digits-012")
        request = pb.StartFineTuneRequest(
            base_model=pb.ModelSpec(name=BASE),
            output_model="digits",
            dataset_id=dataset.dataset_id,
            hyperparameters=pb.FineTuneHyperparameters(epochs=3, hidden_units=32),
        )
        job, _events = wait_done(stub, stub.StartFineTune(request, timeout=60).job_id)
        assert job.state == pb.SUCCEEDED, job.error
        assert (job.output_model, job.output_version) == ("digits", 1)
        classify = pb.ClassifyRequest(model=pb.ModelSpec(name="digits"), images=images[:2], top_k=1)
        answer = stub.Classify(classify, timeout=30)
        assert answer.model.version == 1
        assert {p.label for result in answer.results for p in result.predictions} <= set(CLASSES)
    version_dir = f"{bucket_path(bucket_url)}/digits/1"
    fs = s3()
    marker = json.loads(fs.cat_file(f"{version_dir}/{PUBLISHED_MARKER}"))
    assert {"saved_model.pb", "manifest.json", "metrics.json", "assets/labels.txt"} <= set(marker["files"])
    manifest = json.loads(fs.cat_file(f"{version_dir}/manifest.json"))
    assert manifest["name"] == "digits" and manifest["source"]["job_id"] == job.job_id

"""Datasets beside a bucket model root: an upload is copied to ``<root>/.datasets/<id>/`` (marker last),
and a replica whose own state_dir lacks it copies it back before training, so replicas sharing a
PostgreSQL job store need not share ``state_dir``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from model_format.layout import PUBLISHED_MARKER
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.errors import NotFound
from server.finetune.intake import DatasetIntake
from server.finetune.jobs import UploadedImage, UploadInfo
from server.finetune.store_sqlite import SQLiteJobStore
from storage.model_cache import RemoteModelRoot
from tests.server.finetune.helpers import load_digit_images, start, upload, wait_done
from tests.servers import InProcessServer, test_settings
from tests.storage.conftest import bucket_path, publish_version, s3

CLASSES = ("0", "1", "2")


def files_under(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def upload_directly(intake: DatasetIntake, store, images, labels) -> str:
    async def items():
        yield UploadInfo("digits")
        for n, (image, label) in enumerate(zip(images, labels)):
            yield UploadedImage(label, image, f"{n}.png")

    return asyncio.run(intake.upload(store, items())).dataset_id


def test_an_upload_is_copied_to_the_bucket_and_back_byte_identical(bucket_url, tmp_path):
    images, labels = load_digit_images(test_size=100).subset(per_class=2, classes=CLASSES)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    here = DatasetIntake(test_settings(bucket_url, state_dir=tmp_path / "a"))
    dataset_id = upload_directly(here, store, images, labels)
    local = here.datasets_dir / dataset_id
    remote = f"{bucket_path(bucket_url)}/.datasets/{dataset_id}"
    fs = s3()
    assert fs.exists(f"{remote}/{PUBLISHED_MARKER}")
    assert {key.removeprefix(remote + "/") for key in fs.find(remote)} == {
        *files_under(local),
        PUBLISHED_MARKER,
    }
    # The hidden prefix is not a model.
    assert RemoteModelRoot(bucket_url, tmp_path / "cache").scan() == {}

    # Another replica (its own state_dir) finds the dataset and copies it before training.
    there = DatasetIntake(test_settings(bucket_url, state_dir=tmp_path / "b"))
    assert asyncio.run(there.uploaded(store, dataset_id, min_per_class=2)).dataset_id == dataset_id
    assert there.ensure_local(dataset_id) is True
    assert files_under(there.datasets_dir / dataset_id) == files_under(local)
    assert there.ensure_local(dataset_id) is False  # already here: no second download
    assert [p.name for p in there.datasets_dir.iterdir()] == [dataset_id]  # no temporary copy left

    # Without its marker (an unfinished upload) it is neither offered nor copied.
    fs.rm_file(f"{remote}/{PUBLISHED_MARKER}")
    late = DatasetIntake(test_settings(bucket_url, state_dir=tmp_path / "c"))
    with pytest.raises(NotFound, match="unknown dataset"):
        asyncio.run(late.uploaded(store, dataset_id, min_per_class=2))
    with pytest.raises(FileNotFoundError):
        late.ensure_local(dataset_id)
    assert list(late.datasets_dir.iterdir()) == []


def test_a_local_model_root_keeps_datasets_in_state_dir_only(tmp_path):
    model_root = tmp_path / "models"
    model_root.mkdir()
    images, labels = load_digit_images(test_size=100).subset(per_class=2, classes=CLASSES)
    intake = DatasetIntake(test_settings(model_root, state_dir=tmp_path / "state"))
    dataset_id = upload_directly(intake, SQLiteJobStore(tmp_path / "jobs.sqlite3"), images, labels)
    assert intake.index_path(dataset_id).is_file()
    assert intake.ensure_local(dataset_id) is False
    assert list(model_root.iterdir()) == []


@pytest.mark.slow  # two replicas (the fleet)
def test_a_replica_trains_on_a_dataset_uploaded_through_another(
    bucket_url, features_export, postgres, tmp_path
):
    """Upload through A, then A goes away; B (its own, empty state_dir) runs the job on that dataset."""
    publish_version(features_export.path, bucket_url, "vgg16", 1)
    store_url = postgres.fresh_database("datasets")

    def replica(state: str) -> InProcessServer:
        settings = test_settings(
            bucket_url, state_dir=tmp_path / state, runtime="tensorflow", finetune_store=store_url
        )
        return InProcessServer(settings).start()

    images, labels = load_digit_images(test_size=100).subset(per_class=8, classes=CLASSES)
    a = replica("a")
    try:
        with grpc.insecure_channel(a.address) as channel:
            dataset = upload(pb_grpc.ImageModelServiceStub(channel), images, labels, name="digits-012")
    finally:
        a.stop()
    b = replica("b")
    try:
        with grpc.insecure_channel(b.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            # Where the dataset lives is the point, not what 3 epochs learn: min_val_accuracy 0 publishes it.
            started = start(
                stub, "digits", dataset_id=dataset.dataset_id, epochs=3, hidden_units=32, min_val_accuracy=0.0
            )
            job, events = wait_done(stub, started.job_id)
            assert job.state == pb.SUCCEEDED, job.error
            copied = f"dataset {dataset.dataset_id} copied from the model root's bucket"
            assert copied in [e.message for e in events]
            answer = stub.Classify(
                pb.ClassifyRequest(model=pb.ModelSpec(name="digits"), images=images[:2], top_k=1), timeout=30
            )
            assert {p.label for r in answer.results for p in r.predictions} <= set(CLASSES)
    finally:
        b.stop()
    assert files_under(tmp_path / "b" / "datasets" / dataset.dataset_id) == files_under(
        tmp_path / "a" / "datasets" / dataset.dataset_id
    )

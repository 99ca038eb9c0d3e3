"""Fine-tuning under faults: a full disk or a permission error while publishing fails the job with
the reason and leaves nothing partial; a label that is not UTF-8 is INVALID_ARGUMENT."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import load_digit_images, start, upload, wait_done
from tests.servers import InProcessServer, copy_version, test_settings

FAST = dict(epochs=2, hidden_units=32)


@pytest.fixture(scope="module")
def small_digits():
    images, labels = load_digit_images().subset(per_class=8, classes=tuple("0123"))
    return images, labels


def test_disk_full_while_publishing_fails_the_job_and_publishes_nothing(
    tmp_path, features_export, small_digits
):
    root = tmp_path / "models"
    copy_version(features_export.path, root, "vgg16", 1)
    full = root / "digits-full"
    full.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a size-limited tmpfs needs root: {mounted.stderr.decode().strip()}")
    server = InProcessServer(test_settings(root, state_dir=tmp_path / "state")).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            dataset = upload(stub, *small_digits)
            job, _events = wait_done(
                stub, start(stub, "digits-full", dataset_id=dataset.dataset_id, **FAST).job_id
            )
            assert job.state == pb.FAILED
            assert "No space left on device" in job.error, job.error
            assert str(root) not in job.error
            assert list(full.iterdir()) == []
            status = stub.ListModels(pb.ListModelsRequest())
            assert "digits-full" not in [m.name for m in status.models]
    finally:
        server.stop()
        subprocess.run(["umount", str(full)], check=True)


@contextmanager
def immutable(directory: Path):
    """chattr +i: nobody, not even root, may create entries in ``directory`` (EPERM)."""
    locked = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
    if locked.returncode != 0:
        pytest.skip(
            f"the immutable flag needs root and a filesystem that has it: {locked.stderr.decode().strip()}"
        )
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.mark.slow  # the disk-full test takes the same path
def test_permission_denied_while_publishing_fails_the_job_and_publishes_nothing(
    tmp_path, features_export, small_digits
):
    root = tmp_path / "models"
    copy_version(features_export.path, root, "vgg16", 1)
    locked = root / "digits-locked"
    locked.mkdir()
    server = InProcessServer(test_settings(root, state_dir=tmp_path / "state")).start()
    try:
        with grpc.insecure_channel(server.address) as channel, immutable(locked):
            stub = pb_grpc.ImageModelServiceStub(channel)
            dataset = upload(stub, *small_digits)
            job, _ = wait_done(
                stub, start(stub, "digits-locked", dataset_id=dataset.dataset_id, **FAST).job_id
            )
            assert job.state == pb.FAILED
            assert "Operation not permitted" in job.error, job.error
            assert str(root) not in job.error
            assert list(locked.iterdir()) == []
    finally:
        server.stop()


def test_a_label_that_is_not_utf8_is_invalid_argument(tmp_path, features_export):
    root = tmp_path / "models"
    copy_version(features_export.path, root, "vgg16", 1)
    server = InProcessServer(test_settings(root, state_dir=tmp_path / "state")).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            raw_upload = channel.stream_unary("/imageserve.v1.ImageModelService/UploadDataset")
            # UploadDatasetRequest{image: LabeledImage{label: b"\xff\xfe", image: b"x"}}
            labeled = b"\x0a\x02\xff\xfe" + b"\x12\x01x"
            message = b"\x12" + bytes([len(labeled)]) + labeled
            with pytest.raises(grpc.RpcError) as caught:
                raw_upload(iter([message]), timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed request" in caught.value.details()
            health = pb_grpc.ImageModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=30)
            assert [m.name for m in health.models] == ["vgg16"]
    finally:
        server.stop()

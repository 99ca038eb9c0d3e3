"""Helpers of the fine-tuning tests: real digit images, uploads, directories, waiting on jobs."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from protos.imageserve.v1 import image_service_pb2 as pb

#: Bound of every wait on a job (a full digits job takes ~40 s on a busy 2-core machine).
JOB_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 digits as 32x32 RGB PNGs, with a stratified held-out test split."""

    train_images: list[bytes]
    train_labels: list[str]
    test_images: list[bytes]
    test_labels: list[str]

    def subset(self, per_class: int, classes: Sequence[str] = tuple("0123456789"), offset: int = 0):
        """``per_class`` training images of each class (from the ``offset``-th on), in a stable order."""
        images, labels = [], []
        for label in classes:
            members = [i for i, lab in enumerate(self.train_labels) if lab == label][
                offset : offset + per_class
            ]
            images += [self.train_images[i] for i in members]
            labels += [label] * len(members)
        return images, labels


def digit_png(pixels: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) upscaled to a 32x32 RGB PNG."""
    gray = Image.fromarray((pixels * (255.0 / 16.0)).round().astype(np.uint8))
    buffer = io.BytesIO()
    gray.resize((32, 32), Image.BILINEAR).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def load_digit_images(test_size: int = 300, seed: int = 0) -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = [digit_png(x) for x in digits.images]
    labels = [str(t) for t in digits.target]
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    return Digits(list(train_x), list(train_y), list(test_x), list(test_y))


def upload_requests(images, labels, name: str = "", filenames: Iterable[str] | None = None):
    if name:
        yield pb.UploadDatasetRequest(info=pb.DatasetInfo(name=name))
    filenames = list(filenames) if filenames is not None else [f"{i:05d}.png" for i in range(len(images))]
    for image, label, filename in zip(images, labels, filenames):
        yield pb.UploadDatasetRequest(image=pb.LabeledImage(label=label, image=image, filename=filename))


def upload(stub, images, labels, name: str = "", filenames=None) -> pb.Dataset:
    return stub.UploadDataset(upload_requests(images, labels, name, filenames), timeout=120)


def write_image_dir(root: Path, images, labels) -> Path:
    """The Keras image_dataset_from_directory layout: ``root/<label>/<n>.png``."""
    for n, (image, label) in enumerate(zip(images, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{n:05d}.png").write_bytes(image)
    return root


def start(stub, output_model: str, dataset_id: str = "", data_dir: str = "", request_id: str = "", **hyper):
    request = pb.StartFineTuneRequest(
        base_model=pb.ModelSpec(name="vgg16"),
        output_model=output_model,
        hyperparameters=pb.FineTuneHyperparameters(**hyper),
        request_id=request_id,
    )
    if dataset_id:
        request.dataset_id = dataset_id
    if data_dir:
        request.data_dir = data_dir
    return stub.StartFineTune(request, timeout=60)


def watch(stub, job_id: str, after: int = 0, timeout: float = JOB_TIMEOUT_S) -> Iterable[pb.FineTuneEvent]:
    return stub.WatchFineTuneJob(
        pb.WatchFineTuneJobRequest(job_id=job_id, after_event_id=after), timeout=timeout
    )


def wait_done(
    stub, job_id: str, timeout: float = JOB_TIMEOUT_S
) -> tuple[pb.FineTuneJob, list[pb.FineTuneEvent]]:
    """Follow the job's events until the stream ends (the job has ended); returns the job and its events."""
    events = list(watch(stub, job_id, timeout=timeout))
    job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job_id), timeout=30)
    assert job.state in (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED), pb.JobState.Name(job.state)
    return job, events


def wait_event(
    stub,
    job_id: str,
    matches: Callable[[pb.FineTuneEvent], bool],
    timeout: float = JOB_TIMEOUT_S,
    after: int = 0,
):
    """The first event after ``after`` that ``matches`` (the watch is cancelled then); fails if the job ends
    first."""
    stream = watch(stub, job_id, after=after, timeout=timeout)
    try:
        for event in stream:
            if matches(event):
                return event
    finally:
        stream.cancel()
    raise AssertionError(f"job {job_id} ended without the expected event")


def worker_pid(stub, job_id: str) -> int:
    """The training worker's pid, from the job's 'training worker started (pid N, ...)' event."""
    event = wait_event(stub, job_id, lambda e: "training worker started" in e.message)
    return int(re.search(r"pid (\d+)", event.message).group(1))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped


def classify_accuracy(stub, model: str, images, labels, version: int | None = None) -> tuple[float, set[int]]:
    """Top-1 accuracy through Classify, and the versions that answered."""
    spec = pb.ModelSpec(name=model, version=version) if version else pb.ModelSpec(name=model)
    correct, versions = 0, set()
    for start_at in range(0, len(images), 64):
        response = stub.Classify(
            pb.ClassifyRequest(model=spec, images=images[start_at : start_at + 64], top_k=1), timeout=60
        )
        versions.add(response.model.version)
        for result, label in zip(response.results, labels[start_at : start_at + 64]):
            correct += result.predictions[0].label == label
    return correct / len(images), versions


def assert_status(call: Callable[[], object], code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, f"{caught.value.code()}: {caught.value.details()}"
    details = caught.value.details()
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"
    return details


def versions_on_disk(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []

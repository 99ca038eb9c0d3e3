"""Job lifecycle: idempotent starts, queueing, cancellation, the accuracy gate, a killed worker."""

from __future__ import annotations

import os
import random
import signal

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.server.finetune.helpers import (
    assert_status,
    process_gone,
    start,
    upload,
    versions_on_disk,
    wait_done,
    wait_event,
    worker_pid,
)
from tests.servers import wait_for


@pytest.fixture(scope="module")
def small(stub, digits):
    """60 digits, 6 per class: a quick job."""
    return upload(stub, *digits.subset(6), name="small")


def staging_dirs(model_root, name):
    directory = model_root / name
    return [p.name for p in directory.iterdir() if p.name.startswith(".")] if directory.exists() else []


def cancel(stub, job_id):
    return stub.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job_id), timeout=60)


def test_same_request_id_returns_the_same_job_and_other_parameters_are_refused(stub, small):
    first = start(stub, "dup", dataset_id=small.dataset_id, request_id="req-1", epochs=3)
    again = start(stub, "dup", dataset_id=small.dataset_id, request_id="req-1", epochs=3)
    assert again.job_id == first.job_id and again.request_id == "req-1"
    assert_status(
        lambda: start(stub, "dup", dataset_id=small.dataset_id, request_id="req-1", epochs=4),
        grpc.StatusCode.ALREADY_EXISTS,
        f"already used for job {first.job_id}",
    )
    other = start(stub, "dup", dataset_id=small.dataset_id, request_id="req-2", epochs=3)
    assert other.job_id != first.job_id
    jobs = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(), timeout=30).jobs
    assert sum(j.request_id == "req-1" for j in jobs) == 1
    for job in (other, first):
        assert cancel(stub, job.job_id).state == pb.CANCELLED


def test_cancel_a_queued_and_a_running_job(stub, small, model_root):
    running = start(stub, "cancelled", dataset_id=small.dataset_id, epochs=1000, early_stopping_patience=1000)
    queued = start(stub, "cancelled", dataset_id=small.dataset_id)
    assert stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=queued.job_id), timeout=30).state == pb.QUEUED

    cancelled = cancel(stub, queued.job_id)
    assert cancelled.state == pb.CANCELLED and cancelled.HasField("finished_at")
    _job, events = wait_done(stub, queued.job_id, timeout=30)
    assert events[-1].state == pb.CANCELLED and "cancelled while queued" in events[-1].message
    assert cancel(stub, queued.job_id).state == pb.CANCELLED  # cancelling twice is fine

    pid = worker_pid(stub, running.job_id)
    wait_event(stub, running.job_id, lambda e: e.HasField("epoch"))  # training has started
    cancelled = cancel(stub, running.job_id)
    assert cancelled.state == pb.CANCELLED and cancelled.phase == pb.TRAINING
    wait_for(lambda: process_gone(pid), 30, what="the cancelled worker to exit")
    _job, events = wait_done(stub, running.job_id, timeout=30)
    assert "nothing was published" in events[-1].message
    assert versions_on_disk(model_root / "cancelled") == []

    listed = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(states=[pb.CANCELLED]), timeout=30).jobs
    assert {running.job_id, queued.job_id} <= {j.job_id for j in listed}
    assert all(j.state == pb.CANCELLED for j in listed)


def test_accuracy_gate_fails_the_job_and_publishes_nothing(stub, digits, model_root):
    images, labels = digits.subset(6)
    shuffled = labels[:]
    random.Random(0).shuffle(shuffled)  # labels that have nothing to do with the images
    dataset = upload(stub, images, shuffled, name="noise")
    job = start(stub, "gated", dataset_id=dataset.dataset_id, epochs=3, min_val_accuracy=0.9)
    job, events = wait_done(stub, job.job_id)
    assert job.state == pb.FAILED and job.phase == pb.TRAINING
    assert "below min_val_accuracy 0.9" in job.error and "nothing was published" in job.error
    assert job.HasField("metrics") and job.metrics.val_accuracy < 0.9 and len(job.metrics.per_class) == 10
    assert job.hyperparameters.min_val_accuracy == pytest.approx(0.9)
    assert not any(e.phase == pb.EXPORTING for e in events)
    assert versions_on_disk(model_root / "gated") == []
    assert_status(lambda: cancel(stub, job.job_id), grpc.StatusCode.FAILED_PRECONDITION, "already FAILED")


def test_worker_killed_while_exporting_fails_the_job_and_publishes_nothing(stub, small, model_root, server):
    job = start(stub, "killed", dataset_id=small.dataset_id, epochs=2)
    pid = worker_pid(stub, job.job_id)
    wait_event(stub, job.job_id, lambda e: e.phase == pb.EXPORTING)
    # Kill it while the new version is half written (in its staging directory).
    wait_for(lambda: staging_dirs(model_root, "killed"), 120, 0.02, "the staging directory of the export")
    os.kill(pid, signal.SIGKILL)
    job, events = wait_done(stub, job.job_id)
    assert job.state == pb.FAILED and job.phase == pb.EXPORTING
    assert job.error.startswith("interrupted: training worker was killed (signal 9)")
    assert versions_on_disk(model_root / "killed") == []
    assert staging_dirs(model_root, "killed") == []
    server.reconcile()
    assert_status(
        lambda: stub.Classify(
            pb.ClassifyRequest(model=pb.ModelSpec(name="killed"), images=[b"x"]), timeout=30
        ),
        grpc.StatusCode.NOT_FOUND,
        "unknown model 'killed'",
    )


def test_augmentation_trains_without_the_cache(stub, digits, model_root):
    images, labels = digits.subset(6, classes="0123")
    images, labels = images + digits.subset(12, classes="4")[0], labels + ["4"] * 12  # imbalanced
    dataset = upload(stub, images, labels, name="augmented")
    assert dataset.imbalance_ratio == 2.0
    job = start(stub, "augmented", dataset_id=dataset.dataset_id, epochs=2, augment=True,
                class_weighting=pb.CLASS_WEIGHTING_BALANCED)  # fmt: skip
    job, events = wait_done(stub, job.job_id)
    assert job.state == pb.SUCCEEDED, job.error
    assert job.hyperparameters.augment and job.hyperparameters.class_weighting == pb.CLASS_WEIGHTING_BALANCED
    assert any("augmentation is on: the feature cache is off" in e.message for e in events)
    assert any("imbalance ratio 2.00" in e.message for e in events)
    assert job.metrics.epochs_run == 2 and [c.label for c in job.metrics.per_class] == list("01234")
    assert versions_on_disk(model_root / "augmented") == [str(job.output_version)]

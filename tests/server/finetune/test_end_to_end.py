"""Acceptance: real digits fine-tuned on the vgg16 base, then classified through the served new version."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from storage.local import content_key
from tests.answers import assert_same_features
from tests.server.finetune.helpers import (
    classify_accuracy,
    start,
    upload,
    wait_done,
    watch,
    write_image_dir,
)

MIN_ACCURACY = 0.95
PHASES = [pb.VALIDATING, pb.EXTRACTING_FEATURES, pb.TRAINING, pb.EXPORTING]


@pytest.fixture(scope="module")
def uploaded(stub, digits):
    """A job on 1300 uploaded digits (130 per class), run to its end: (dataset, job, events)."""
    images, labels = digits.subset(130)
    dataset = upload(stub, images, labels, name="digits-upload")
    job = start(stub, "digits", dataset_id=dataset.dataset_id, request_id="e2e-upload")
    job, events = wait_done(stub, job.job_id)
    return dataset, job, events


@pytest.fixture(scope="module")
def from_directory(stub, digits, data_root):
    """A job on another 1300 digits (overlapping) from <data_root>/digits/<label>/: (job, events)."""
    images, labels = digits.subset(130, offset=10)
    write_image_dir(data_root / "digits", images, labels)
    job = start(stub, "digits_dir", data_dir="digits")
    return wait_done(stub, job.job_id)


def test_uploaded_digits_are_classified_by_the_new_version(stub, digits, uploaded):
    dataset, job, _events = uploaded
    assert dataset.num_images == 1300 and dict(dataset.images_per_class) == {str(d): 130 for d in range(10)}
    assert dataset.imbalance_ratio == 1.0
    assert job.state == pb.SUCCEEDED, job.error
    assert (job.output_model, job.output_version, job.base_model, job.base_version) == (
        "digits",
        1,
        "vgg16",
        1,
    )
    accuracy, versions = classify_accuracy(stub, "digits", digits.test_images, digits.test_labels)
    assert versions == {1}
    assert accuracy >= MIN_ACCURACY, f"held-out accuracy {accuracy:.3f}"
    print(f"uploaded digits: held-out accuracy {accuracy:.4f}, val accuracy {job.metrics.val_accuracy:.4f}")


def test_directory_digits_are_classified_by_the_new_version(stub, digits, from_directory):
    job, _events = from_directory
    assert job.state == pb.SUCCEEDED, job.error
    assert job.dataset.name == "digits" and job.dataset.num_images == 1300
    accuracy, versions = classify_accuracy(stub, "digits_dir", digits.test_images, digits.test_labels)
    assert versions == {job.output_version}
    assert accuracy >= MIN_ACCURACY, f"held-out accuracy {accuracy:.3f}"
    print(f"directory digits: held-out accuracy {accuracy:.4f}, val accuracy {job.metrics.val_accuracy:.4f}")


def test_job_reports_final_metrics(uploaded):
    _dataset, job, _events = uploaded
    metrics = job.metrics
    assert 1 <= metrics.best_epoch <= metrics.epochs_run <= job.hyperparameters.epochs == 50
    assert metrics.val_accuracy >= 0.9 and metrics.train_accuracy >= metrics.val_accuracy - 0.05
    assert [c.label for c in metrics.per_class] == [str(d) for d in range(10)]
    assert sum(c.support for c in metrics.per_class) == 260  # 20% of each class held out
    assert all(0.0 <= c.precision <= 1.0 and 0.0 <= c.recall <= 1.0 for c in metrics.per_class)
    assert metrics.extract_seconds > 0 and metrics.train_seconds > 0
    # Defaults are filled in and reported.
    hp = job.hyperparameters
    assert (hp.hidden_units, hp.batch_size, hp.early_stopping_patience, hp.min_images_per_class) == (
        256,
        32,
        8,
        5,
    )
    assert hp.dropout == pytest.approx(0.2) and hp.validation_fraction == pytest.approx(0.2)
    assert hp.class_weighting == pb.CLASS_WEIGHTING_NONE and not hp.HasField("min_val_accuracy")
    assert job.created_at.seconds <= job.started_at.seconds <= job.finished_at.seconds


def test_version_directory_holds_model_metrics_and_plots(stub, uploaded, model_root):
    _dataset, job, _events = uploaded
    version_dir = model_root / "digits" / str(job.output_version)
    assert list(job.artifacts) == [
        f"digits/{job.output_version}/{name}"
        for name in ("metrics.json", "training_curve.png", "confusion_matrix.png")
    ]
    for artifact in job.artifacts:
        assert (model_root / artifact).is_file()
    for plot in ("training_curve.png", "confusion_matrix.png"):
        assert (version_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((version_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == job.metrics.epochs_run
    assert set(metrics["history"][0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    counts = np.array(metrics["confusion_matrix"]["counts"])
    assert counts.shape == (10, 10) and counts.sum() == 260
    assert np.trace(counts) / counts.sum() == pytest.approx(job.metrics.val_accuracy, abs=1e-6)
    assert [c["label"] for c in metrics["per_class"]] == [str(d) for d in range(10)]

    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["source"] == {
        "kind": "finetune",
        "base_model": "vgg16",
        "base_version": 1,
        "base_hash": content_key(model_root / "vgg16" / "1"),  # the base's network, to share it
        "job_id": job.job_id,
    }
    # The head on its own (served on the base's features by a server holding the base).
    assert manifest["head"]["file"] == "head.npz" and (version_dir / "head.npz").is_file()
    assert [layer["type"] for layer in manifest["head"]["layers"]] == ["normalization", "dense", "dense"]
    assert manifest["head"]["check"]["max_probability_difference"] <= 1e-5
    assert (manifest["num_classes"], manifest["input_size"], manifest["preprocessing"]) == (10, 32, "caffe")
    assert set(manifest["signatures"]) == {
        "classify",
        "classify_pixels",
        "features",
        "features_pixels",
        "serving_default",
    }
    assert not [p.name for p in (model_root / "digits").iterdir() if p.name.startswith(".")], (
        "staging left behind"
    )

    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="digits"), timeout=30)
    served = next(v for v in status.versions if v.version == job.output_version)
    assert served.state == pb.ModelVersionStatus.AVAILABLE
    assert list(served.metadata.labels) == [str(d) for d in range(10)]
    assert served.metadata.source == f"finetune of vgg16 v1 (job {job.job_id})"


def test_new_version_keeps_the_base_features_and_takes_pixels(stub, digits, uploaded):
    images = digits.test_images[:4]
    base = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name="vgg16"), images=images), timeout=60
    )
    tuned = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name="digits"), images=images), timeout=60
    )
    assert tuned.dimension == base.dimension == 512
    assert_same_features([f.values for f in tuned.features], [f.values for f in base.features])


def test_watch_shows_phases_epochs_and_eta(uploaded):
    _dataset, job, events = uploaded
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert events[0].state == pb.QUEUED and events[-1].state == pb.SUCCEEDED
    assert "now served" in events[-1].message
    phases = []
    for event in events:
        if event.phase != pb.JOB_PHASE_UNSPECIFIED and (not phases or phases[-1] != event.phase):
            phases.append(event.phase)
    assert phases == PHASES
    epochs = [e.epoch for e in events if e.HasField("epoch")]
    assert [e.epoch for e in epochs] == list(range(1, job.metrics.epochs_run + 1))
    assert all(0.0 <= e.val_accuracy <= 1.0 and e.loss > 0 for e in epochs)
    assert any(e.eta_seconds > 0 for e in events if e.phase == pb.EXTRACTING_FEATURES)
    assert any(e.eta_seconds > 0 for e in events if e.phase == pb.TRAINING)
    assert all(0.0 <= e.progress <= 1.0 for e in events)
    assert any("extracted features of 1300/1300 images" in e.message for e in events)


def test_watch_resumes_after_an_event_id(stub, uploaded):
    _dataset, job, events = uploaded
    middle = events[len(events) // 2].event_id
    resumed = list(watch(stub, job.job_id, after=middle, timeout=30))
    assert [e.event_id for e in resumed] == [e.event_id for e in events if e.event_id > middle]
    assert [e.message for e in resumed] == [e.message for e in events if e.event_id > middle]
    assert list(watch(stub, job.job_id, after=events[-1].event_id, timeout=30)) == []


def test_same_request_id_returns_the_same_job(stub, uploaded):
    dataset, job, _events = uploaded
    again = start(stub, "digits", dataset_id=dataset.dataset_id, request_id="e2e-upload")
    assert (
        again.job_id == job.job_id
        and again.state == pb.SUCCEEDED
        and again.output_version == job.output_version
    )


def test_jobs_are_listed_newest_first_and_by_state(stub, uploaded, from_directory):
    _dataset, upload_job, _ = uploaded
    directory_job, _ = from_directory
    listed = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(states=[pb.SUCCEEDED]), timeout=30).jobs
    assert [j.job_id for j in listed] == [directory_job.job_id, upload_job.job_id]
    assert (
        stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(states=[pb.RUNNING, pb.QUEUED]), timeout=30).jobs
        == []
    )
    assert len(stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(limit=1), timeout=30).jobs) == 1

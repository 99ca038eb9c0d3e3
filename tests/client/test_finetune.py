"""ModelClient fine-tuning against a real server: upload, start, wait, classify with the user's labels,
a failed job, cancel, idempotency, listing, watching (and resuming a broken watch)."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from api_types.results import EpochMetrics, JobEvent
from client import (
    AlreadyExists,
    Dataset,
    DeadlineExceeded,
    FailedPrecondition,
    FineTuneCancelled,
    FineTuneFailed,
    Hyperparameters,
    InvalidArgument,
    JobPhase,
    JobState,
    ModelClient,
    NotFound,
    PermissionDenied,
)
from client.progress import JobProgressBar
from tests.client.conftest import JOB_TIMEOUT_S, NAMES, PER_CLASS
from tests.servers import InProcessServer, test_settings

PHASES = [JobPhase.VALIDATING, JobPhase.EXTRACTING_FEATURES, JobPhase.TRAINING, JobPhase.EXPORTING]
ARTIFACTS = ("metrics.json", "training_curve.png", "confusion_matrix.png")
#: A job that would run for a long time: cancelled by the tests that start it.
ENDLESS = Hyperparameters(epochs=1000, early_stopping_patience=1000)


def test_the_fine_tuned_model_answers_with_the_uploaded_labels(tuner, trained, digits):
    assert trained.dataset.name == "named digits"
    assert trained.dataset.images_per_class == {name: PER_CLASS for name in NAMES.values()}
    status = trained.status
    assert status.state is JobState.SUCCEEDED and status.succeeded and status.done, status.error
    assert trained.job.state is JobState.SUCCEEDED and trained.job.status == status
    assert (status.output_model, status.output_version, status.base_model, status.base_version) == (
        "digits",
        1,
        "vgg16",
        1,
    )
    assert status.artifacts == [f"digits/1/{name}" for name in ARTIFACTS]
    assert status.request_id.startswith("client-")  # the client's own idempotency key

    result = tuner.classify(digits.test_images[:20], "digits", top_k=3)
    assert (result.model, result.version) == ("digits", 1)
    assert {p.label for predictions in result for p in predictions} <= set(NAMES.values())
    assert tuner.model_status("digits").version(1).metadata.labels == sorted(NAMES.values())


def test_the_job_reports_metrics_and_the_hyperparameters_it_used(trained):
    status = trained.status
    metrics = status.metrics
    assert metrics is not None and 1 <= metrics.best_epoch <= metrics.epochs_run <= 3
    assert 0.0 <= metrics.val_accuracy <= 1.0 and metrics.extract_seconds > 0 and metrics.train_seconds > 0
    assert [c.label for c in metrics.per_class] == sorted(NAMES.values())
    assert all(0.0 <= c.precision <= 1.0 and 0.0 <= c.recall <= 1.0 for c in metrics.per_class)
    assert all(c.support >= 1 for c in metrics.per_class)  # validation holds out at least one per class
    # Only epochs was sent; the server filled in its defaults.
    assert status.hyperparameters == Hyperparameters(
        hidden_units=256,
        dropout=0.2,
        learning_rate=0.001,
        epochs=3,
        batch_size=32,
        validation_fraction=0.2,
        seed=0,
        class_weighting="none",
        early_stopping_patience=8,
        min_val_accuracy=None,
        augment=False,
        min_images_per_class=5,
    )
    assert status.created_at <= status.started_at <= status.finished_at


def test_wait_passes_every_event_to_the_progress_callback(trained):
    events = trained.events
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    assert events[0].state is JobState.QUEUED and events[-1].state is JobState.SUCCEEDED
    phases: list[JobPhase] = []
    for event in events:
        if event.phase is not JobPhase.UNSPECIFIED and (not phases or phases[-1] is not event.phase):
            phases.append(event.phase)
    assert phases == PHASES
    epochs = [e.epoch for e in events if e.epoch is not None]
    assert [e.epoch for e in epochs] == list(range(1, trained.status.metrics.epochs_run + 1))
    assert all(isinstance(e, EpochMetrics) and e.loss > 0 for e in epochs)
    assert any(e.eta_seconds for e in events if e.phase is JobPhase.TRAINING)
    assert all(e.job_id == trained.status.job_id and e.time is not None for e in events)


def test_watch_replays_and_resumes_after_an_event_id(tuner, trained):
    job_id = trained.status.job_id
    events = list(tuner.watch_job(job_id))
    assert events == trained.events
    middle = events[len(events) // 2].event_id
    assert list(trained.job.events(after_event_id=middle)) == [e for e in events if e.event_id > middle]
    assert list(tuner.watch_job(job_id, after_event_id=events[-1].event_id)) == []


class _Reset(grpc.RpcError):
    """What the client sees when the connection breaks mid-stream."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "Socket closed (injected by the test)"

    def trailing_metadata(self):
        return ()


class _CutStream:
    """A response stream that breaks after ``keep`` messages."""

    def __init__(self, stream, keep: int) -> None:
        self.stream, self.left = stream, keep

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            self.stream.cancel()
            raise _Reset()
        self.left -= 1
        return next(self.stream)

    def cancel(self) -> None:
        self.stream.cancel()


class BreakFirstWatch(grpc.UnaryStreamClientInterceptor):
    """Breaks the first WatchFineTuneJob stream after ``keep`` events; records each watch's after_event_id."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.after_event_ids: list[int] = []

    def intercept_unary_stream(self, continuation, client_call_details, request):
        self.after_event_ids.append(request.after_event_id)
        stream = continuation(client_call_details, request)
        return _CutStream(stream, self.keep) if len(self.after_event_ids) == 1 else stream


def test_a_broken_watch_is_resumed_after_the_last_event(tuning_server, trained):
    breaker = BreakFirstWatch(keep=3)
    with ModelClient(tuning_server.address, timeout=60, interceptors=[breaker]) as client:
        assert list(client.watch_job(trained.status.job_id)) == trained.events
        assert breaker.after_event_ids == [0, 3]

        breaker.after_event_ids.clear()
        events: list[JobEvent] = []
        assert client.wait_job(trained.status.job_id, progress=events.append) == trained.status
        assert events == trained.events and breaker.after_event_ids == [0, 3]


def test_wait_raises_the_servers_reason_when_the_job_fails(gated):
    with pytest.raises(FineTuneFailed) as caught:
        gated.wait(timeout=JOB_TIMEOUT_S, progress=False)
    failed = caught.value
    assert not isinstance(failed, FineTuneCancelled)
    assert failed.code is grpc.StatusCode.ABORTED
    message = str(failed)
    assert message.startswith(f"fine-tuning job {gated.job_id} FAILED: ")
    assert "below min_val_accuracy 0.9" in message and "nothing was published" in message
    job = failed.job
    assert job.state is JobState.FAILED and job.phase is JobPhase.TRAINING and job.output_version == 0
    assert job.metrics is not None and job.metrics.val_accuracy < 0.9 and job.artifacts == []
    assert gated.state is JobState.FAILED and gated.status == job  # the handle keeps the final status

    assert gated.wait(progress=False, raise_on_failure=False) == job
    with pytest.raises(FailedPrecondition, match="already FAILED"):
        gated.cancel()


def test_cancel_a_job_then_wait_for_it(tuner, dataset, capsys):
    job = tuner.fine_tune(dataset, output_model="cancelled", hyperparameters=ENDLESS)
    assert job.state is JobState.QUEUED and job.status.hyperparameters.epochs == 1000
    with pytest.raises(DeadlineExceeded, match=f"fine-tuning job {job.job_id} is still (QUEUED|RUNNING)"):
        job.wait(timeout=0.5, progress=False)

    assert job.cancel().state is JobState.CANCELLED and job.state is JobState.CANCELLED
    with pytest.raises(FineTuneCancelled, match=f"fine-tuning job {job.job_id} CANCELLED"):
        job.wait(progress=False)
    status = job.wait(progress=True, raise_on_failure=False)  # a bar on stderr, even when not a terminal
    assert status.state is JobState.CANCELLED and status.output_version == 0
    assert "CANCELLED: " in capsys.readouterr().err
    assert job.refresh() == status and tuner.get_job(job.job_id) == status
    assert job.job_id in [j.job_id for j in tuner.list_jobs(states=JobState.CANCELLED)]


def test_the_same_request_id_returns_the_same_job(tuner, dataset):
    first = tuner.fine_tune(
        dataset, output_model="twice", request_id="same-key", hyperparameters={"epochs": 2}
    )
    again = tuner.fine_tune(
        dataset, output_model="twice", request_id="same-key", hyperparameters=Hyperparameters(epochs=2)
    )
    assert again.job_id == first.job_id and again.status.request_id == "same-key"
    with pytest.raises(AlreadyExists, match=f"already used for job {first.job_id}"):
        tuner.fine_tune(dataset, output_model="twice", request_id="same-key", hyperparameters={"epochs": 3})
    other = tuner.fine_tune(dataset, output_model="twice", hyperparameters={"epochs": 2})
    assert other.job_id != first.job_id
    for job in (other, first):
        assert job.cancel().state is JobState.CANCELLED


def test_a_directory_is_uploaded_anew_on_each_call(tuner, digits_dir):
    first = tuner.fine_tune(
        digits_dir, output_model="from_local_dir", request_id="dir-key", hyperparameters=ENDLESS
    )
    assert first.status.dataset.name == "digits" and first.status.dataset.num_images == 10 * PER_CLASS
    with pytest.raises(AlreadyExists) as caught:
        tuner.fine_tune(
            digits_dir, output_model="from_local_dir", request_id="dir-key", hyperparameters=ENDLESS
        )
    assert "upload once with upload_dataset() and pass the Dataset" in str(caught.value)
    first.cancel()


def test_data_dir_is_a_directory_on_the_server(tuner):
    job = tuner.fine_tune(data_dir="digits", output_model="from_data_root", hyperparameters=ENDLESS)
    assert job.status.dataset.name == "digits" and job.status.dataset.images_per_class == {
        str(d): PER_CLASS for d in range(10)
    }
    job.cancel()
    with pytest.raises(NotFound, match="'elsewhere' is not a directory under the data root"):
        tuner.fine_tune(data_dir="elsewhere", output_model="from_data_root")


def test_upload_takes_a_directory_and_images_in_any_form(tuner, digits_dir, digits):
    from_dir = tuner.upload_dataset(digits_dir)  # notes.txt is skipped
    assert (from_dir.name, from_dir.num_images) == ("digits", 10 * PER_CLASS)
    assert (
        from_dir.images_per_class == {str(d): PER_CLASS for d in range(10)}
        and from_dir.imbalance_ratio == 1.0
    )

    pil = Image.open(io.BytesIO(digits.train_images[0]))
    pixels = np.full((3, 16, 16, 3), 200, np.uint8)  # three images
    mixed = tuner.upload_dataset(
        {"file": [digits_dir / "1" / sorted(p.name for p in (digits_dir / "1").iterdir())[0]], "pil": pil,
         "array": pixels, "bytes": [digits.train_images[1], bytearray(digits.train_images[2])]},
        name="mixed",
    )  # fmt: skip
    assert mixed.images_per_class == {"array": 3, "bytes": 2, "file": 1, "pil": 1}
    assert mixed.labels == ["array", "bytes", "file", "pil"] and mixed.imbalance_ratio == 3.0

    pairs = ((NAMES[label], image) for image, label in zip(*digits.subset(2), strict=True))  # a generator
    streamed = tuner.upload_dataset(pairs)
    assert streamed.num_images == 20 and streamed.name == "upload of 20 images"


def test_bad_datasets_are_refused_before_anything_is_sent(tuner, tmp_path, dataset):
    with pytest.raises(ValueError, match="is not a directory"):
        tuner.upload_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-directories"):
        tuner.upload_dataset(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="has no images"):
        tuner.upload_dataset(tmp_path)
    with pytest.raises(TypeError, match="item 1: expected a \\(label, image\\) pair"):
        tuner.upload_dataset([("a", b"x"), b"y"])
    with pytest.raises(TypeError, match="image 0: got int"):
        tuner.upload_dataset({"a": [3]})
    with pytest.raises(ValueError, match="either as dataset .* or as data_dir"):
        tuner.fine_tune(output_model="x")
    with pytest.raises(ValueError, match="not both"):
        tuner.fine_tune(dataset, data_dir="digits", output_model="x")
    with pytest.raises(ValueError, match="output_model must name the model"):
        tuner.fine_tune(dataset, output_model="")
    with pytest.raises(ValueError, match="class_weighting must be one of none, balanced"):
        Hyperparameters(class_weighting="equal")


def test_an_unreadable_file_cancels_the_upload(tuner, digits):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tuner.upload_dataset({"a": [digits.train_images[0], "/nonexistent/missing.png"]})


def test_the_server_names_a_bad_image_and_a_bad_hyperparameter(tuner, tmp_path, digits, dataset):
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    with pytest.raises(InvalidArgument, match="image 2 \\('bad.png'\\), label 'b': text, not an image"):
        tuner.upload_dataset([("a", digits.train_images[0]), ("a", digits.train_images[1]), ("b", bad)])
    with pytest.raises(InvalidArgument, match="hyperparameters: dropout must be in \\[0, 1\\)"):
        tuner.fine_tune(dataset, output_model="x", hyperparameters={"dropout": 1.5})


def test_jobs_are_listed_newest_first_and_got_by_id(tuner, trained):
    listed = tuner.list_jobs(states=["SUCCEEDED"])
    assert trained.status in listed and all(job.state is JobState.SUCCEEDED for job in listed)
    everything = tuner.list_jobs()
    assert [job.created_at for job in everything] == sorted(
        (job.created_at for job in everything), reverse=True
    )
    assert tuner.list_jobs(limit=1) == everything[:1]
    assert tuner.get_job(trained.status.job_id) == trained.status
    with pytest.raises(NotFound, match="unknown fine-tuning job 'ft-none'"):
        tuner.get_job("ft-none")
    with pytest.raises(ValueError, match="unknown job state 'DONE'"):
        tuner.list_jobs(states="DONE")


def test_a_read_only_token_cannot_fine_tune(tmp_path, named_digits):
    read, tune = "read-only-token-3c9a51e7", "fine-tuning-token-b84f20d6"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{read} read\n{tune} read,finetune\n")
    (tmp_path / "models").mkdir()
    server = InProcessServer(test_settings(tmp_path / "models", auth_tokens_file=tokens)).start()
    try:
        some = Dataset("ds-0123456789abcdef", "some", 12, {"a": 6, "b": 6}, 1.0)
        with ModelClient(server.address, token=read, timeout=30) as client:
            with pytest.raises(
                PermissionDenied, match="UploadDataset needs a token with the 'finetune' scope"
            ):
                client.upload_dataset(named_digits)
            with pytest.raises(
                PermissionDenied, match="StartFineTune needs a token with the 'finetune' scope"
            ):
                client.fine_tune(some, output_model="digits")
            assert client.list_jobs() == []  # reading is allowed
        with ModelClient(server.address, token=tune, timeout=30) as client:
            assert client.upload_dataset(named_digits).num_images == 10 * PER_CLASS
    finally:
        server.stop()


def _event(event_id, state, phase=JobPhase.UNSPECIFIED, message="", progress=0.0, eta=None, epoch=None):
    return JobEvent(event_id, "ft-1", None, state, phase, message, progress, eta, epoch)


def test_the_progress_bar_shows_phase_progress_epoch_metrics_and_eta():
    out = io.StringIO()
    bar = JobProgressBar(out)
    epoch = EpochMetrics(2, 0.5, 0.8, 0.6, 0.75)
    for event in [
        _event(1, JobState.QUEUED, message="queued: upload dataset 'x' (60 images, 10 classes)"),
        _event(2, JobState.RUNNING, JobPhase.VALIDATING, "checked 60 images", 1.0),
        _event(
            3, JobState.RUNNING, JobPhase.EXTRACTING_FEATURES, "extracted features of 30/60 images", 0.5, 4.0
        ),
        _event(
            4,
            JobState.RUNNING,
            JobPhase.TRAINING,
            "epoch 2/3: loss 0.5000, val_accuracy 0.7500",
            0.67,
            75,
            epoch,
        ),
        _event(5, JobState.SUCCEEDED, JobPhase.EXPORTING, "published digits v1; now served", 1.0),
    ]:
        bar(event)
    bar.close()
    text = out.getvalue()
    expected = [
        "queued",
        "validating",
        "extracting features",
        "50%",
        "eta 00:04",
        "training",
        "67%",
        "eta 01:15",
        "epoch 2/3: loss 0.5000, val_accuracy 0.7500",
        "SUCCEEDED: published digits v1",
    ]
    for fragment in expected:
        assert fragment in text, (fragment, text)

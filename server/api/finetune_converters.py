"""Fine-tuning protobuf messages <-> the plain values of :mod:`server.finetune.jobs`. Nothing here decides."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from protos.imageserve.v1 import image_service_pb2 as pb
from server.errors import InvalidRequest
from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import (
    Dataset,
    FineTuneMetrics,
    Job,
    JobEvent,
    JobPhase,
    JobState,
    StartRequest,
    UploadedImage,
    UploadInfo,
)

_WEIGHTING_TO_PLAIN = {
    pb.CLASS_WEIGHTING_UNSPECIFIED: "none",
    pb.CLASS_WEIGHTING_NONE: "none",
    pb.CLASS_WEIGHTING_BALANCED: "balanced",
}
_WEIGHTING_TO_PB = {"none": pb.CLASS_WEIGHTING_NONE, "balanced": pb.CLASS_WEIGHTING_BALANCED}
# proto3 ``optional`` fields of FineTuneHyperparameters (read from the proto): unset means the default.
_OPTIONAL_FIELDS = tuple(
    field.name for field in pb.FineTuneHyperparameters.DESCRIPTOR.fields if field.has_presence
)


async def upload_items(
    requests: AsyncIterator[pb.UploadDatasetRequest],
) -> AsyncIterator[UploadedImage | UploadInfo]:
    async for request in requests:
        item = request.WhichOneof("item")
        if item == "info":
            yield UploadInfo(request.info.name)
        elif item == "image":
            yield UploadedImage(request.image.label, request.image.image, request.image.filename)
        else:
            raise InvalidRequest("an UploadDatasetRequest without info or image; set one of them")


def hyperparameters(message: pb.FineTuneHyperparameters) -> Hyperparameters:
    """Unset optional fields take the defaults of :class:`Hyperparameters`."""
    values = {name: getattr(message, name) for name in _OPTIONAL_FIELDS if message.HasField(name)}
    if message.class_weighting not in _WEIGHTING_TO_PLAIN:
        raise InvalidRequest(f"unknown class_weighting {message.class_weighting}")
    values["class_weighting"] = _WEIGHTING_TO_PLAIN[message.class_weighting]
    values["augment"] = message.augment
    return Hyperparameters(**values)


def start_request(request: pb.StartFineTuneRequest) -> StartRequest:
    base = request.base_model
    choice = base.WhichOneof("version_choice")
    if choice == "version" and base.version < 1:
        raise InvalidRequest(f"base_model version must be >= 1, got {base.version}")
    if choice == "version_label" and not base.version_label:
        raise InvalidRequest("base_model.version_label is set but empty")
    source = request.WhichOneof("dataset")
    return StartRequest(
        base_model=base.name,
        base_version=base.version if choice == "version" else None,
        base_label=base.version_label if choice == "version_label" else None,
        output_model=request.output_model,
        hyperparameters=hyperparameters(request.hyperparameters),
        dataset_id=request.dataset_id if source == "dataset_id" else None,
        data_dir=request.data_dir if source == "data_dir" else None,
        request_id=request.request_id,
    )


def job_states(states) -> list[JobState]:
    plain = []
    for state in states:
        if state == pb.JOB_STATE_UNSPECIFIED or pb.JobState.Name(state) not in JobState.__members__:
            raise InvalidRequest(f"unknown job state {state} in states")
        plain.append(JobState[pb.JobState.Name(state)])
    return plain


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def dataset(plain: Dataset) -> pb.Dataset:
    message = pb.Dataset(
        dataset_id=plain.dataset_id,
        name=plain.name,
        num_images=plain.num_images,
        images_per_class=plain.images_per_class,
        imbalance_ratio=plain.imbalance_ratio,
    )
    if plain.created_at is not None:
        message.created_at.FromDatetime(plain.created_at)
    return message


def hyperparameters_message(hp: Hyperparameters) -> pb.FineTuneHyperparameters:
    message = pb.FineTuneHyperparameters(
        class_weighting=_WEIGHTING_TO_PB[hp.class_weighting], augment=hp.augment
    )
    for name in _OPTIONAL_FIELDS:
        value = getattr(hp, name)
        if value is not None:
            setattr(message, name, value)
    return message


def metrics_message(metrics: FineTuneMetrics) -> pb.FineTuneMetrics:
    return pb.FineTuneMetrics(
        val_accuracy=metrics.val_accuracy,
        val_loss=metrics.val_loss,
        train_accuracy=metrics.train_accuracy,
        train_loss=metrics.train_loss,
        epochs_run=metrics.epochs_run,
        best_epoch=metrics.best_epoch,
        per_class=[
            pb.ClassMetrics(label=c.label, precision=c.precision, recall=c.recall, support=c.support)
            for c in metrics.per_class
        ],
        extract_seconds=metrics.extract_seconds,
        train_seconds=metrics.train_seconds,
    )


def _phase(phase: JobPhase) -> int:
    return pb.JOB_PHASE_UNSPECIFIED if phase is JobPhase.UNSPECIFIED else pb.JobPhase.Value(phase.value)


def job(plain: Job) -> pb.FineTuneJob:
    message = pb.FineTuneJob(
        job_id=plain.job_id,
        request_id=plain.request_id,
        state=pb.JobState.Value(plain.state.value),
        phase=_phase(plain.phase),
        base_model=plain.base_model,
        base_version=plain.base_version,
        output_model=plain.output_model,
        output_version=plain.output_version,
        error=plain.error,
        hyperparameters=hyperparameters_message(plain.hyperparameters),
        dataset=dataset(plain.dataset),
        artifacts=list(plain.artifacts),
    )
    if plain.metrics is not None:
        message.metrics.CopyFrom(metrics_message(plain.metrics))
    for field, seconds in (
        ("created_at", plain.created_at),
        ("started_at", plain.started_at),
        ("finished_at", plain.finished_at),
    ):
        stamp = _timestamp(seconds)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def event(plain: JobEvent) -> pb.FineTuneEvent:
    message = pb.FineTuneEvent(
        event_id=plain.event_id,
        job_id=plain.job_id,
        time=_timestamp(plain.time),
        state=pb.JobState.Value(plain.state.value),
        phase=_phase(plain.phase),
        eta_seconds=plain.eta_seconds,
        message=plain.message,
        progress=plain.progress,
    )
    if plain.epoch is not None:
        message.epoch.CopyFrom(
            pb.EpochMetrics(
                epoch=plain.epoch.epoch,
                loss=plain.epoch.loss,
                accuracy=plain.epoch.accuracy,
                val_loss=plain.epoch.val_loss,
                val_accuracy=plain.epoch.val_accuracy,
            )
        )
    return message

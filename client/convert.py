"""Protobuf messages <-> the client's plain values. Nothing here does I/O or decides anything."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from api_types.results import (
    ClassifyResult,
    ClassMetrics,
    Dataset,
    EpochMetrics,
    FeaturesResult,
    FineTuneMetrics,
    Hyperparameters,
    JobEvent,
    JobPhase,
    JobState,
    JobStatus,
    ModelMetadata,
    ModelStatus,
    Prediction,
    ServerInfo,
    ServingStats,
    VersionState,
    VersionStatus,
)
from protos.imageserve.v1 import image_service_pb2 as pb

#: Bytes a request needs beyond its images: the model spec, top_k and field headers. Generous on
#: purpose: model names are at most 128 characters, version labels are short.
REQUEST_OVERHEAD_BYTES = 1024


def model_spec(name: str, version: int | None = None, label: str | None = None) -> pb.ModelSpec:
    """The ``ModelSpec`` naming a model and, optionally, a version number or a version label."""
    if version is not None and label is not None:
        raise ValueError(f"pass version or label, not both (got version={version}, label={label!r})")
    if version is not None:
        return pb.ModelSpec(name=name, version=version)
    if label is not None:
        return pb.ModelSpec(name=name, version_label=label)
    return pb.ModelSpec(name=name)


def pinned(spec: pb.ModelSpec, version: int) -> pb.ModelSpec:
    """``spec`` pinned to an explicit version number."""
    return pb.ModelSpec(name=spec.name, version=version)


def is_pinned(spec: pb.ModelSpec) -> bool:
    return spec.WhichOneof("version_choice") == "version"


def image_bytes_in_request(data: bytes) -> int:
    """Serialized size of one image in a request: tag, length varint and data."""
    length = len(data)
    varint = 1
    while length >= 0x80:
        length >>= 7
        varint += 1
    return 1 + varint + len(data)


def classify_request(spec: pb.ModelSpec, images: Sequence[bytes], top_k: int) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(model=spec, images=images, top_k=top_k)


def features_request(spec: pb.ModelSpec, images: Sequence[bytes]) -> pb.ExtractFeaturesRequest:
    return pb.ExtractFeaturesRequest(model=spec, images=images)


def classify_result(responses: Sequence[pb.ClassifyResponse]) -> ClassifyResult:
    """One result from the responses of consecutive chunks (all answered by one version)."""
    predictions = [
        [Prediction(p.class_id, p.label, p.score) for p in result.predictions]
        for response in responses
        for result in response.results
    ]
    return ClassifyResult(responses[0].model.name, responses[0].model.version, predictions)


def features_result(responses: Sequence[pb.ExtractFeaturesResponse]) -> FeaturesResult:
    """One ``[N, D]`` float32 array from the responses of consecutive chunks."""
    dimension = responses[0].dimension
    count = sum(len(response.features) for response in responses)
    features = np.empty((count, dimension), np.float32)
    row = 0
    for response in responses:
        for vector in response.features:
            features[row] = vector.values
            row += 1
    return FeaturesResult(responses[0].model.name, responses[0].model.version, features)


def _time(parent: object, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime; None when unset."""
    if not parent.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp: Timestamp = getattr(parent, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _metadata(message: pb.ModelMetadata) -> ModelMetadata:
    return ModelMetadata(
        input_size=message.input_size,
        num_classes=message.num_classes,
        feature_dim=message.feature_dim,
        signature_names=list(message.signature_names),
        labels=list(message.labels),
        preprocessing=message.preprocessing,
        source=message.source,
        created_at=_time(message, "created_at"),
    )


def _version_status(message: pb.ModelVersionStatus) -> VersionStatus:
    stats = message.stats
    return VersionStatus(
        version=message.version,
        state=VersionState(pb.ModelVersionStatus.State.Name(message.state)),
        error=message.error,
        metadata=_metadata(message.metadata) if message.HasField("metadata") else None,
        stats=ServingStats(stats.requests, stats.images, stats.batches, stats.max_batch_size),
        resident_bytes=message.resident_bytes,
    )


def model_status(message: pb.ModelStatus) -> ModelStatus:
    return ModelStatus(
        name=message.name,
        default_version=message.default_version,
        versions=[_version_status(version) for version in message.versions],
        version_labels=dict(message.version_labels),
    )


def model_list(message: pb.ListModelsResponse) -> list[ModelStatus]:
    return [model_status(model) for model in message.models]


def server_info(message: pb.ServerInfo) -> ServerInfo:
    return ServerInfo(
        server_version=message.server_version,
        max_images_per_request=message.max_images_per_request,
        max_receive_message_bytes=message.max_receive_message_bytes,
        max_send_message_bytes=message.max_send_message_bytes,
        max_image_pixels=message.max_image_pixels,
        max_batch_size=message.max_batch_size,
    )


# --- fine-tuning ------------------------------------------------------------------------------------

_WEIGHTING_TO_PB = {"none": pb.CLASS_WEIGHTING_NONE, "balanced": pb.CLASS_WEIGHTING_BALANCED}
_WEIGHTING_FROM_PB = {pb.CLASS_WEIGHTING_NONE: "none", pb.CLASS_WEIGHTING_BALANCED: "balanced"}
#: proto3 ``optional`` fields of FineTuneHyperparameters (read from the proto): set only when the caller
#: gives a value.
_OPTIONAL_HYPERPARAMETERS = tuple(
    field.name for field in pb.FineTuneHyperparameters.DESCRIPTOR.fields if field.has_presence
)


def hyperparameters_message(hyperparameters: Hyperparameters) -> pb.FineTuneHyperparameters:
    """Only the fields the caller set; the server fills in the others with its defaults."""
    message = pb.FineTuneHyperparameters()
    for name, value in hyperparameters.given().items():
        if name == "class_weighting":
            message.class_weighting = _WEIGHTING_TO_PB[str(value)]
        else:
            setattr(message, name, value)
    return message


def _f32(value: float) -> float:
    """A proto ``float`` (32-bit) as the decimal it was written as: 0.2, not 0.20000000298023224."""
    return float(f"{value:.7g}")


def hyperparameters(message: pb.FineTuneHyperparameters) -> Hyperparameters:
    values: dict[str, object] = {}
    for name in _OPTIONAL_HYPERPARAMETERS:
        if message.HasField(name):
            value = getattr(message, name)
            values[name] = _f32(value) if isinstance(value, float) else value
    return Hyperparameters(
        **values,  # type: ignore[arg-type]
        class_weighting=_WEIGHTING_FROM_PB.get(message.class_weighting),
        augment=message.augment,
    )


def upload_info(name: str) -> pb.UploadDatasetRequest:
    return pb.UploadDatasetRequest(info=pb.DatasetInfo(name=name))


def upload_image(label: str, image: bytes, filename: str) -> pb.UploadDatasetRequest:
    return pb.UploadDatasetRequest(image=pb.LabeledImage(label=label, image=image, filename=filename))


def upload_message_bytes(label: str, image: bytes, filename: str) -> int:
    """Serialized size of one image message of an upload (at most a few bytes over)."""
    return image_bytes_in_request(image) + len(label.encode()) + len(filename.encode()) + 16


def start_request(
    base: pb.ModelSpec,
    output_model: str,
    hyperparameters: Hyperparameters,
    request_id: str,
    dataset_id: str | None = None,
    data_dir: str | None = None,
) -> pb.StartFineTuneRequest:
    request = pb.StartFineTuneRequest(
        base_model=base,
        output_model=output_model,
        hyperparameters=hyperparameters_message(hyperparameters),
        request_id=request_id,
    )
    if dataset_id is not None:
        request.dataset_id = dataset_id
    if data_dir is not None:
        request.data_dir = data_dir
    return request


def list_jobs_request(states: Iterable[JobState], limit: int) -> pb.ListFineTuneJobsRequest:
    return pb.ListFineTuneJobsRequest(
        states=[pb.JobState.Value(state.value) for state in states], limit=limit
    )


def dataset(message: pb.Dataset) -> Dataset:
    return Dataset(
        dataset_id=message.dataset_id,
        name=message.name,
        num_images=message.num_images,
        images_per_class=dict(sorted(message.images_per_class.items())),
        imbalance_ratio=message.imbalance_ratio,
        created_at=_time(message, "created_at"),
    )


def _metrics(message: pb.FineTuneMetrics) -> FineTuneMetrics:
    return FineTuneMetrics(
        val_accuracy=_f32(message.val_accuracy),
        val_loss=_f32(message.val_loss),
        train_accuracy=_f32(message.train_accuracy),
        train_loss=_f32(message.train_loss),
        epochs_run=message.epochs_run,
        best_epoch=message.best_epoch,
        per_class=[
            ClassMetrics(c.label, _f32(c.precision), _f32(c.recall), c.support) for c in message.per_class
        ],
        extract_seconds=message.extract_seconds,
        train_seconds=message.train_seconds,
    )


def _state(value: int) -> JobState:
    return JobState(pb.JobState.Name(value))


def _phase(value: int) -> JobPhase:
    return JobPhase(pb.JobPhase.Name(value))


def job_status(message: pb.FineTuneJob) -> JobStatus:
    return JobStatus(
        job_id=message.job_id,
        request_id=message.request_id,
        state=_state(message.state),
        phase=_phase(message.phase),
        base_model=message.base_model,
        base_version=message.base_version,
        output_model=message.output_model,
        output_version=message.output_version,
        error=message.error,
        hyperparameters=hyperparameters(message.hyperparameters),
        metrics=_metrics(message.metrics) if message.HasField("metrics") else None,
        dataset=dataset(message.dataset),
        created_at=_time(message, "created_at"),
        started_at=_time(message, "started_at"),
        finished_at=_time(message, "finished_at"),
        artifacts=list(message.artifacts),
    )


def job_list(message: pb.ListFineTuneJobsResponse) -> list[JobStatus]:
    return [job_status(job) for job in message.jobs]


def job_event(message: pb.FineTuneEvent) -> JobEvent:
    epoch = message.epoch
    return JobEvent(
        event_id=message.event_id,
        job_id=message.job_id,
        time=_time(message, "time"),
        state=_state(message.state),
        phase=_phase(message.phase),
        message=message.message,
        progress=_f32(message.progress),
        eta_seconds=message.eta_seconds or None,
        epoch=EpochMetrics(
            epoch.epoch,
            _f32(epoch.loss),
            _f32(epoch.accuracy),
            _f32(epoch.val_loss),
            _f32(epoch.val_accuracy),
        )
        if message.HasField("epoch")
        else None,
    )

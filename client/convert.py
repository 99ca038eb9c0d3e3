"""Protobuf messages <-> the client's plain values. Nothing here does I/O or decides anything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone

import numpy as np

from client.results import (
    ClassifyResult,
    FeaturesResult,
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


def _metadata(message: pb.ModelMetadata) -> ModelMetadata:
    return ModelMetadata(
        input_size=message.input_size,
        num_classes=message.num_classes,
        feature_dim=message.feature_dim,
        signature_names=list(message.signature_names),
        labels=list(message.labels),
        preprocessing=message.preprocessing,
        source=message.source,
        created_at=message.created_at.ToDatetime(tzinfo=timezone.utc)
        if message.HasField("created_at")
        else None,
    )


def _version_status(message: pb.ModelVersionStatus) -> VersionStatus:
    stats = message.stats
    return VersionStatus(
        version=message.version,
        state=VersionState(pb.ModelVersionStatus.State.Name(message.state)),
        error=message.error,
        metadata=_metadata(message.metadata) if message.HasField("metadata") else None,
        stats=ServingStats(stats.requests, stats.images, stats.batches, stats.max_batch_size),
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

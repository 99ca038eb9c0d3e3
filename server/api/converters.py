"""Protobuf messages <-> the core's plain values. Nothing here decides anything."""

from __future__ import annotations

import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from protos.imageserve.v1 import image_service_pb2 as pb
from server import __version__
from server.errors import InvalidRequest
from server.inference import ClassifyResult, FeaturesResult
from server.served import ModelRef, ModelView, ServedVersion
from server.settings import ServerSettings


def model_ref(spec: pb.ModelSpec) -> ModelRef:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        if spec.version < 1:
            raise InvalidRequest(f"model version must be >= 1, got {spec.version}")
        return ModelRef(spec.name, version=spec.version)
    if choice == "version_label":
        if not spec.version_label:
            raise InvalidRequest("version_label is set but empty")
        return ModelRef(spec.name, label=spec.version_label)
    return ModelRef(spec.name)


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` value (None without one)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def classify_response(result: ClassifyResult) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        model=pb.ServedModel(name=result.name, version=result.version),
        results=[
            pb.Classifications(
                predictions=[
                    pb.Prediction(class_id=p.class_id, label=p.label, score=p.score) for p in predictions
                ]
            )
            for predictions in result.predictions
        ],
    )


def features_response(result: FeaturesResult) -> pb.ExtractFeaturesResponse:
    return pb.ExtractFeaturesResponse(
        model=pb.ServedModel(name=result.name, version=result.version),
        dimension=int(result.features.shape[1]) if result.features.ndim == 2 else 0,
        features=[pb.FeatureVector(values=row.tolist()) for row in result.features],
    )


def _version_status(served: ServedVersion, include_labels: bool) -> pb.ModelVersionStatus:
    status = pb.ModelVersionStatus(
        version=served.version,
        state=pb.ModelVersionStatus.State.Value(served.state.value),
        error=served.error,
        resident_bytes=served.resident_bytes,
    )
    if served.model is not None:
        status.runtime = served.model.runtime
        status.runtime_detail = served.model.runtime_detail
        status.precision = served.model.precision
        status.precision_detail = served.model.precision_detail
    metadata = served.metadata
    if metadata is not None:
        status.metadata.CopyFrom(
            pb.ModelMetadata(
                input_size=metadata.input_size,
                num_classes=metadata.num_classes,
                feature_dim=metadata.feature_dim,
                signature_names=list(metadata.signature_names),
                labels=list(metadata.labels) if include_labels else [],
                preprocessing=metadata.preprocessing,
                source=metadata.source,
            )
        )
        if metadata.created_at is not None:
            created = Timestamp()
            created.FromDatetime(metadata.created_at)
            status.metadata.created_at.CopyFrom(created)
    stats = served.stats()
    status.stats.CopyFrom(
        pb.ServingStats(
            requests=stats.requests,
            images=stats.images,
            batches=stats.batches,
            max_batch_size=stats.max_batch_size,
        )
    )
    return status


def model_status(view: ModelView, include_labels: bool) -> pb.ModelStatus:
    return pb.ModelStatus(
        name=view.name,
        default_version=view.default_version,
        versions=[_version_status(served, include_labels) for served in view.versions],
        version_labels=view.version_labels,
    )


def server_info(settings: ServerSettings) -> pb.ServerInfo:
    return pb.ServerInfo(
        server_version=__version__,
        max_images_per_request=settings.max_images_per_request,
        max_receive_message_bytes=settings.max_message_bytes,
        max_send_message_bytes=settings.max_message_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_batch_size=settings.max_batch_size if settings.batching else 1,
    )

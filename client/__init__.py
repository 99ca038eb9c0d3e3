"""imageserve client: a typed Python SDK for the imageserve gRPC API, and ``python -m client``.

::

    from client import ModelClient

    with ModelClient("localhost:8500") as client:
        result = client.classify(["cat.jpg", "dog.png"], model="mobilenet_v2", top_k=3)
        for predictions in result:
            print(predictions[0].label, predictions[0].score)
        vectors = client.extract_features("cat.jpg", model="vgg16").features  # float32 [1, D]

        job = client.fine_tune("photos/", output_model="flowers", hyperparameters=Hyperparameters(epochs=20))
        final = job.wait()  # progress bar on a terminal; FineTuneFailed if the job fails
        client.classify("rose.jpg", model="flowers", version=final.output_version)

:class:`AsyncModelClient` has the same methods for asyncio. Errors are subclasses of
:class:`ImageServeError` (see :mod:`client.errors`). Needs only grpcio, grpcio-status, protobuf,
numpy and Pillow: importing it never imports TensorFlow.
"""

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
from client.aio import AsyncModelClient
from client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FineTuneCancelled,
    FineTuneFailed,
    ImageServeError,
    InternalServerError,
    InvalidArgument,
    InvalidImage,
    ModelNotFound,
    NotFound,
    PermissionDenied,
    ServerBusy,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from client.jobs import AsyncFineTuneJob, FineTuneJob
from client.options import ClientOptions, RetryPolicy
from client.sync import ModelClient

__all__ = [
    "ModelClient",
    "AsyncModelClient",
    "ClientOptions",
    "RetryPolicy",
    "Prediction",
    "ClassifyResult",
    "FeaturesResult",
    "ModelStatus",
    "ModelMetadata",
    "VersionStatus",
    "VersionState",
    "ServingStats",
    "ServerInfo",
    "Hyperparameters",
    "Dataset",
    "FineTuneJob",
    "AsyncFineTuneJob",
    "JobStatus",
    "JobState",
    "JobPhase",
    "JobEvent",
    "EpochMetrics",
    "ClassMetrics",
    "FineTuneMetrics",
    "ImageServeError",
    "InvalidArgument",
    "InvalidImage",
    "NotFound",
    "ModelNotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "ServerBusy",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "Unauthenticated",
    "PermissionDenied",
    "Unimplemented",
    "InternalServerError",
    "FineTuneFailed",
    "FineTuneCancelled",
]

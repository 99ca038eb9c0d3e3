"""What the client returns: plain, typed dataclasses (no protobuf).

Inference results name the model version that answered. A call split into several requests is
answered by one version throughout (see :mod:`client.operations`), so a result has one ``version``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

__all__ = [
    "Prediction",
    "ClassifyResult",
    "FeaturesResult",
    "VersionState",
    "ModelMetadata",
    "ServingStats",
    "VersionStatus",
    "ModelStatus",
    "ServerInfo",
]


@dataclass(frozen=True)
class Prediction:
    """One class and its probability."""

    #: Output index of the class in the model's classifier.
    class_id: int
    #: Human-readable class name from the model's exported labels, e.g. ``"tabby"``.
    label: str
    #: Probability in [0, 1].
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    """Top-k predictions per image, in the order the images were given.

    ``result[i]`` is the list of predictions for image ``i`` (highest score first); iterating yields
    those lists; ``len(result)`` is the number of images.
    """

    #: Name of the model that answered.
    model: str
    #: Version that answered every image of the call.
    version: int
    #: One list per image, highest score first.
    predictions: list[list[Prediction]]

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: int) -> list[Prediction]:
        return self.predictions[index]

    def __iter__(self) -> Iterator[list[Prediction]]:
        return iter(self.predictions)

    @property
    def top(self) -> list[Prediction]:
        """The best prediction of each image."""
        return [predictions[0] for predictions in self.predictions]


@dataclass(frozen=True, eq=False)
class FeaturesResult:
    """Feature vectors, one row per image in the order the images were given."""

    #: Name of the model that answered.
    model: str
    #: Version that answered every image of the call.
    version: int
    #: ``float32`` array of shape ``[N, D]``.
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.features[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.features)

    @property
    def dimension(self) -> int:
        """Length of each feature vector (``D``)."""
        return int(self.features.shape[1])


class VersionState(str, enum.Enum):
    """Lifecycle state of a model version on the server."""

    UNSPECIFIED = "STATE_UNSPECIFIED"
    #: Being loaded and warmed up; not taking traffic yet.
    LOADING = "LOADING"
    #: Serving requests.
    AVAILABLE = "AVAILABLE"
    #: Finishing in-flight requests before it is released.
    UNLOADING = "UNLOADING"
    #: Could not be loaded; see :attr:`VersionStatus.error`.
    FAILED = "FAILED"


@dataclass(frozen=True)
class ModelMetadata:
    """What a version's manifest says about it."""

    #: Square input side the model resizes every image to.
    input_size: int
    #: Number of classes; 0 for a features-only model.
    num_classes: int
    #: Length of the feature vectors.
    feature_dim: int
    #: SavedModel signature names, e.g. ``classify``, ``features``.
    signature_names: list[str]
    #: Class names, index = class_id (filled by :meth:`model_status`, empty in :meth:`list_models`).
    labels: list[str]
    #: Normalisation baked into the signatures: caffe, tf, torch, unit or none.
    preprocessing: str
    #: Where the weights came from.
    source: str
    #: When the version was exported (UTC), if known.
    created_at: datetime | None


@dataclass(frozen=True)
class ServingStats:
    """Counters since a version was loaded."""

    requests: int
    images: int
    batches: int
    max_batch_size: int


@dataclass(frozen=True)
class VersionStatus:
    """One version of a model and its state."""

    version: int
    state: VersionState
    #: Why the version FAILED; empty otherwise.
    error: str
    #: None while LOADING or when it FAILED before its manifest was read.
    metadata: ModelMetadata | None
    stats: ServingStats


@dataclass(frozen=True)
class ModelStatus:
    """A model's versions (newest first), default version and version labels."""

    name: str
    #: The version that answers when a call names none; 0 when none is available.
    default_version: int
    versions: list[VersionStatus]
    #: e.g. ``{"stable": 3, "canary": 4}``.
    version_labels: dict[str, int] = field(default_factory=dict)

    def version(self, number: int) -> VersionStatus:
        """The status of version ``number``; ``KeyError`` naming the known ones otherwise."""
        for status in self.versions:
            if status.version == number:
                return status
        known = ", ".join(str(s.version) for s in self.versions) or "none"
        raise KeyError(f"model {self.name!r} has no version {number}; versions: {known}")


@dataclass(frozen=True)
class ServerInfo:
    """Server limits (the client splits large calls by them) and its version."""

    server_version: str
    #: Most images one request may carry.
    max_images_per_request: int
    #: Largest request message the server accepts, in bytes.
    max_receive_message_bytes: int
    #: Largest response message the server sends, in bytes.
    max_send_message_bytes: int
    #: Largest image the server decodes, in pixels.
    max_image_pixels: int
    #: Images per model call when batching is on (1 when off).
    max_batch_size: int

"""What the client returns: plain, typed dataclasses (no protobuf).

Inference results name the model version that answered. A call split into several requests is
answered by one version throughout (see :mod:`client.operations`), so a result has one ``version``.

Fine-tuning: :class:`Hyperparameters` (what a job is asked to do), :class:`Dataset` (an upload),
:class:`JobStatus` (a job as the server last reported it) and :class:`JobEvent` (one step of a job).
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
    "Hyperparameters",
    "HYPERPARAMETER_DEFAULTS",
    "Dataset",
    "JobState",
    "JobPhase",
    "EpochMetrics",
    "ClassMetrics",
    "FineTuneMetrics",
    "JobStatus",
    "JobEvent",
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
    #: Served but not in memory (unloaded to stay within the server's memory budget, or not loaded
    #: yet); a call loads it. :attr:`VersionStatus.error` says why.
    UNLOADED = "UNLOADED"


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
    #: Memory the version holds (bytes), measured at load; while UNLOADED, what it held last (0: unknown).
    resident_bytes: int = 0


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


# --- fine-tuning ------------------------------------------------------------------------------------

#: Values of :attr:`Hyperparameters.class_weighting`.
CLASS_WEIGHTINGS = ("none", "balanced")


#: The server's default of each :class:`Hyperparameters` field (what a field left at None becomes)
#: and the values it accepts: stated here once for the client (the CLI's help reads them).
HYPERPARAMETER_DEFAULTS: dict[str, tuple[str, str]] = {
    "hidden_units": ("256", "1..8192"),
    "dropout": ("0.2", "[0, 1)"),
    "learning_rate": ("0.001", "(0, 1]"),
    "epochs": ("50", "1..1000"),
    "batch_size": ("32", "1..4096"),
    "validation_fraction": ("0.2", "(0, 1)"),
    "seed": ("0", "0..2**32-1"),
    "class_weighting": ("none", "none, balanced"),
    "early_stopping_patience": ("8", "0..1000"),
    "min_val_accuracy": ("unset", "[0, 1]"),
    "augment": ("False", "True, False"),
    "min_images_per_class": ("5", ">= 2"),
}


@dataclass(frozen=True)
class Hyperparameters:
    """Training parameters of a fine-tuning job (``FineTuneHyperparameters`` in the API).

    A field left at None is not sent, and the server uses its default (:data:`HYPERPARAMETER_DEFAULTS`
    lists each field's default and range). The server checks the ranges when the job is started
    (``InvalidArgument`` naming the field), before any compute. A job's
    :attr:`JobStatus.hyperparameters` has every field filled in with what the job used.
    """

    #: Units of the hidden Dense(relu) layer of the head.
    hidden_units: int | None = None
    #: Dropout rate after the hidden layer.
    dropout: float | None = None
    #: Adam learning rate.
    learning_rate: float | None = None
    #: Most epochs; early stopping may end sooner.
    epochs: int | None = None
    #: Batch size.
    batch_size: int | None = None
    #: Fraction of each class held out for validation (stratified, at least one image).
    validation_fraction: float | None = None
    #: Seed of the split, initialisation, shuffling and dropout.
    seed: int | None = None
    #: ``"none"`` (every image counts the same) or ``"balanced"`` (n / (classes x n_class)).
    class_weighting: str | None = None
    #: Epochs without validation-loss improvement before stopping (the best epoch is kept).
    early_stopping_patience: int | None = None
    #: Accuracy gate: below this best validation accuracy the job FAILS and publishes nothing.
    min_val_accuracy: float | None = None
    #: Random flips and rotations while training; turns the frozen-feature cache off (much slower).
    augment: bool | None = None
    #: Fewest images per class the dataset check accepts.
    min_images_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.class_weighting is not None and self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, got {self.class_weighting!r}"
            )

    def given(self) -> dict[str, object]:
        """The fields that are set (not None): what is sent to the server."""
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class Dataset:
    """A stored dataset on the server: an upload, or a snapshot of a data-root directory."""

    #: Id to pass back to :meth:`~client.ModelClient.fine_tune` (as this object).
    dataset_id: str
    #: Name given to the upload (or the directory's), shown in job listings.
    name: str
    num_images: int
    #: Images per class label, sorted by label.
    images_per_class: dict[str, int]
    #: Largest class size / smallest class size (1.0 is balanced).
    imbalance_ratio: float
    #: When the server stored it (UTC), if known.
    created_at: datetime | None = None

    @property
    def labels(self) -> list[str]:
        """The class labels, sorted (the order of the fine-tuned model's class ids)."""
        return sorted(self.images_per_class)

    @classmethod
    def by_id(cls, dataset_id: str) -> Dataset:
        """A dataset already on the server, by its id (as an earlier upload or job printed it), to
        pass to :meth:`~client.ModelClient.fine_tune` without uploading the images again."""
        return cls(dataset_id, name="", num_images=0, images_per_class={}, imbalance_ratio=1.0)


class JobState(str, enum.Enum):
    """Where a fine-tuning job is: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED."""

    UNSPECIFIED = "JOB_STATE_UNSPECIFIED"
    #: Waiting for a training worker.
    QUEUED = "QUEUED"
    #: A worker is on it; see :class:`JobPhase`.
    RUNNING = "RUNNING"
    #: Published ``output_model`` version ``output_version``.
    SUCCEEDED = "SUCCEEDED"
    #: Ended with an error (:attr:`JobStatus.error`); nothing was published.
    FAILED = "FAILED"
    #: Cancelled by a client; nothing was published.
    CANCELLED = "CANCELLED"

    @property
    def done(self) -> bool:
        """The job has ended (SUCCEEDED, FAILED or CANCELLED)."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobPhase(str, enum.Enum):
    """What a RUNNING job is doing (for an ended job: the last phase it reached)."""

    UNSPECIFIED = "JOB_PHASE_UNSPECIFIED"
    #: Checking the dataset: classes, counts, decodable images.
    VALIDATING = "VALIDATING"
    #: Running the frozen base once per image.
    EXTRACTING_FEATURES = "EXTRACTING_FEATURES"
    #: Fitting the head.
    TRAINING = "TRAINING"
    #: Writing and verifying the new model version.
    EXPORTING = "EXPORTING"


@dataclass(frozen=True)
class EpochMetrics:
    """Loss and accuracy at the end of one training epoch."""

    #: 1-based epoch number.
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class ClassMetrics:
    """Precision and recall of one class on the validation split."""

    label: str
    precision: float
    recall: float
    #: Validation images of this class.
    support: int


@dataclass(frozen=True)
class FineTuneMetrics:
    """Final metrics of a job: those of the best epoch (whose weights were kept), on the validation split."""

    val_accuracy: float
    val_loss: float
    train_accuracy: float
    train_loss: float
    #: Epochs run (early stopping may end before ``hyperparameters.epochs``).
    epochs_run: int
    #: The epoch whose weights were kept.
    best_epoch: int
    #: One entry per class, in label order.
    per_class: list[ClassMetrics]
    #: Wall time of feature extraction and of training, in seconds.
    extract_seconds: float
    train_seconds: float


@dataclass(frozen=True)
class JobStatus:
    """A fine-tuning job as the server reported it (``FineTuneJob`` in the API)."""

    job_id: str
    #: The idempotency key the job was started with.
    request_id: str
    state: JobState
    #: The current phase while RUNNING; the last phase reached otherwise.
    phase: JobPhase
    #: The frozen base and the version of it that was used.
    base_model: str
    base_version: int
    #: The model a version is published of, and that version once SUCCEEDED (0 before).
    output_model: str
    output_version: int
    #: Why the job FAILED, in words a user can act on; empty otherwise.
    error: str
    #: Every field filled in: what the job trains with.
    hyperparameters: Hyperparameters
    #: Final metrics: when SUCCEEDED, or FAILED at the accuracy gate; None otherwise.
    metrics: FineTuneMetrics | None
    #: The dataset trained on.
    dataset: Dataset
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    #: Files written next to the published version, relative to the server's model root:
    #: ``<model>/<version>/metrics.json``, ``training_curve.png``, ``confusion_matrix.png``.
    artifacts: list[str]

    @property
    def done(self) -> bool:
        """The job has ended (SUCCEEDED, FAILED or CANCELLED)."""
        return self.state.done

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


@dataclass(frozen=True)
class JobEvent:
    """One step of a job: a state or phase change, progress within a phase, or an epoch's metrics."""

    #: Increasing per job: pass the last one seen as ``after_event_id`` to resume a watch.
    event_id: int
    job_id: str
    time: datetime | None
    #: State and phase after this event.
    state: JobState
    phase: JobPhase
    #: What happened, e.g. ``extracted features of 640/1300 images`` or ``epoch 7/50: loss 0.21, ...``.
    message: str
    #: Progress of the current phase, in [0, 1].
    progress: float
    #: Estimated seconds until the current phase ends (training: an upper bound); None when unknown.
    eta_seconds: float | None
    #: Set on end-of-epoch events.
    epoch: EpochMetrics | None

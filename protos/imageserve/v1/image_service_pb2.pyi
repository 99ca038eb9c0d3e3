import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassWeighting(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASS_WEIGHTING_UNSPECIFIED: _ClassVar[ClassWeighting]
    CLASS_WEIGHTING_NONE: _ClassVar[ClassWeighting]
    CLASS_WEIGHTING_BALANCED: _ClassVar[ClassWeighting]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    SUCCEEDED: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    VALIDATING: _ClassVar[JobPhase]
    EXTRACTING_FEATURES: _ClassVar[JobPhase]
    TRAINING: _ClassVar[JobPhase]
    EXPORTING: _ClassVar[JobPhase]
CLASS_WEIGHTING_UNSPECIFIED: ClassWeighting
CLASS_WEIGHTING_NONE: ClassWeighting
CLASS_WEIGHTING_BALANCED: ClassWeighting
JOB_STATE_UNSPECIFIED: JobState
QUEUED: JobState
RUNNING: JobState
SUCCEEDED: JobState
FAILED: JobState
CANCELLED: JobState
JOB_PHASE_UNSPECIFIED: JobPhase
VALIDATING: JobPhase
EXTRACTING_FEATURES: JobPhase
TRAINING: JobPhase
EXPORTING: JobPhase

class ModelSpec(_message.Message):
    __slots__ = ("name", "version", "version_label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    version_label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "images", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: ModelSpec
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    def __init__(self, model: _Optional[_Union[ModelSpec, _Mapping]] = ..., images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("class_id", "label", "score")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classifications(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: ServedModel
    results: _containers.RepeatedCompositeFieldContainer[Classifications]
    def __init__(self, model: _Optional[_Union[ServedModel, _Mapping]] = ..., results: _Optional[_Iterable[_Union[Classifications, _Mapping]]] = ...) -> None: ...

class ExtractFeaturesRequest(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: ModelSpec
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model: _Optional[_Union[ModelSpec, _Mapping]] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FeatureVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ExtractFeaturesResponse(_message.Message):
    __slots__ = ("model", "dimension", "features")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    model: ServedModel
    dimension: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureVector]
    def __init__(self, model: _Optional[_Union[ServedModel, _Mapping]] = ..., dimension: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureVector, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class GetModelStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "default_version", "versions", "version_labels")
    class VersionLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_version: int
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionStatus]
    version_labels: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., default_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[ModelVersionStatus, _Mapping]]] = ..., version_labels: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ModelVersionStatus(_message.Message):
    __slots__ = ("version", "state", "error", "metadata", "stats", "runtime", "runtime_detail", "resident_bytes", "precision", "precision_detail")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ModelVersionStatus.State]
        LOADING: _ClassVar[ModelVersionStatus.State]
        AVAILABLE: _ClassVar[ModelVersionStatus.State]
        UNLOADING: _ClassVar[ModelVersionStatus.State]
        FAILED: _ClassVar[ModelVersionStatus.State]
        UNLOADED: _ClassVar[ModelVersionStatus.State]
    STATE_UNSPECIFIED: ModelVersionStatus.State
    LOADING: ModelVersionStatus.State
    AVAILABLE: ModelVersionStatus.State
    UNLOADING: ModelVersionStatus.State
    FAILED: ModelVersionStatus.State
    UNLOADED: ModelVersionStatus.State
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_DETAIL_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: ModelVersionStatus.State
    error: str
    metadata: ModelMetadata
    stats: ServingStats
    runtime: str
    runtime_detail: str
    resident_bytes: int
    precision: str
    precision_detail: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[ModelVersionStatus.State, str]] = ..., error: _Optional[str] = ..., metadata: _Optional[_Union[ModelMetadata, _Mapping]] = ..., stats: _Optional[_Union[ServingStats, _Mapping]] = ..., runtime: _Optional[str] = ..., runtime_detail: _Optional[str] = ..., resident_bytes: _Optional[int] = ..., precision: _Optional[str] = ..., precision_detail: _Optional[str] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("input_size", "num_classes", "feature_dim", "signature_names", "labels", "preprocessing", "source", "created_at")
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    input_size: int
    num_classes: int
    feature_dim: int
    signature_names: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[str]
    preprocessing: str
    source: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, input_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., feature_dim: _Optional[int] = ..., signature_names: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[str]] = ..., preprocessing: _Optional[str] = ..., source: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ServingStats(_message.Message):
    __slots__ = ("requests", "images", "batches", "max_batch_size")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    requests: int
    images: int
    batches: int
    max_batch_size: int
    def __init__(self, requests: _Optional[int] = ..., images: _Optional[int] = ..., batches: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("server_version", "max_images_per_request", "max_receive_message_bytes", "max_send_message_bytes", "max_image_pixels", "max_batch_size")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    max_images_per_request: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_image_pixels: int
    max_batch_size: int
    def __init__(self, server_version: _Optional[str] = ..., max_images_per_request: _Optional[int] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("info", "image")
    INFO_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    info: DatasetInfo
    image: LabeledImage
    def __init__(self, info: _Optional[_Union[DatasetInfo, _Mapping]] = ..., image: _Optional[_Union[LabeledImage, _Mapping]] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LabeledImage(_message.Message):
    __slots__ = ("label", "image", "filename")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    label: str
    image: bytes
    filename: str
    def __init__(self, label: _Optional[str] = ..., image: _Optional[bytes] = ..., filename: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("dataset_id", "name", "num_images", "images_per_class", "imbalance_ratio", "created_at")
    class ImagesPerClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    IMBALANCE_RATIO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    name: str
    num_images: int
    images_per_class: _containers.ScalarMap[str, int]
    imbalance_ratio: float
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, dataset_id: _Optional[str] = ..., name: _Optional[str] = ..., num_images: _Optional[int] = ..., images_per_class: _Optional[_Mapping[str, int]] = ..., imbalance_ratio: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartFineTuneRequest(_message.Message):
    __slots__ = ("base_model", "dataset_id", "data_dir", "output_model", "hyperparameters", "request_id")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    base_model: ModelSpec
    dataset_id: str
    data_dir: str
    output_model: str
    hyperparameters: FineTuneHyperparameters
    request_id: str
    def __init__(self, base_model: _Optional[_Union[ModelSpec, _Mapping]] = ..., dataset_id: _Optional[str] = ..., data_dir: _Optional[str] = ..., output_model: _Optional[str] = ..., hyperparameters: _Optional[_Union[FineTuneHyperparameters, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class FineTuneHyperparameters(_message.Message):
    __slots__ = ("hidden_units", "dropout", "learning_rate", "epochs", "batch_size", "validation_fraction", "seed", "class_weighting", "early_stopping_patience", "min_val_accuracy", "augment", "min_images_per_class")
    HIDDEN_UNITS_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASS_WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    MIN_IMAGES_PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    hidden_units: int
    dropout: float
    learning_rate: float
    epochs: int
    batch_size: int
    validation_fraction: float
    seed: int
    class_weighting: ClassWeighting
    early_stopping_patience: int
    min_val_accuracy: float
    augment: bool
    min_images_per_class: int
    def __init__(self, hidden_units: _Optional[int] = ..., dropout: _Optional[float] = ..., learning_rate: _Optional[float] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., validation_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., class_weighting: _Optional[_Union[ClassWeighting, str]] = ..., early_stopping_patience: _Optional[int] = ..., min_val_accuracy: _Optional[float] = ..., augment: _Optional[bool] = ..., min_images_per_class: _Optional[int] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("label", "precision", "recall", "support")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    label: str
    precision: float
    recall: float
    support: int
    def __init__(self, label: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., support: _Optional[int] = ...) -> None: ...

class FineTuneMetrics(_message.Message):
    __slots__ = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "epochs_run", "best_epoch", "per_class", "extract_seconds", "train_seconds")
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_RUN_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PER_CLASS_FIELD_NUMBER: _ClassVar[int]
    EXTRACT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    val_accuracy: float
    val_loss: float
    train_accuracy: float
    train_loss: float
    epochs_run: int
    best_epoch: int
    per_class: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    extract_seconds: float
    train_seconds: float
    def __init__(self, val_accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., train_accuracy: _Optional[float] = ..., train_loss: _Optional[float] = ..., epochs_run: _Optional[int] = ..., best_epoch: _Optional[int] = ..., per_class: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., extract_seconds: _Optional[float] = ..., train_seconds: _Optional[float] = ...) -> None: ...

class FineTuneJob(_message.Message):
    __slots__ = ("job_id", "request_id", "state", "phase", "base_model", "base_version", "output_model", "output_version", "error", "hyperparameters", "metrics", "dataset", "created_at", "started_at", "finished_at", "artifacts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    state: JobState
    phase: JobPhase
    base_model: str
    base_version: int
    output_model: str
    output_version: int
    error: str
    hyperparameters: FineTuneHyperparameters
    metrics: FineTuneMetrics
    dataset: Dataset
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., base_model: _Optional[str] = ..., base_version: _Optional[int] = ..., output_model: _Optional[str] = ..., output_version: _Optional[int] = ..., error: _Optional[str] = ..., hyperparameters: _Optional[_Union[FineTuneHyperparameters, _Mapping]] = ..., metrics: _Optional[_Union[FineTuneMetrics, _Mapping]] = ..., dataset: _Optional[_Union[Dataset, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., artifacts: _Optional[_Iterable[str]] = ...) -> None: ...

class GetFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListFineTuneJobsRequest(_message.Message):
    __slots__ = ("states", "limit")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListFineTuneJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[FineTuneJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[FineTuneJob, _Mapping]]] = ...) -> None: ...

class CancelFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchFineTuneJobRequest(_message.Message):
    __slots__ = ("job_id", "after_event_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_event_id: int
    def __init__(self, job_id: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class FineTuneEvent(_message.Message):
    __slots__ = ("event_id", "job_id", "time", "state", "phase", "epoch", "eta_seconds", "message", "progress")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    job_id: str
    time: _timestamp_pb2.Timestamp
    state: JobState
    phase: JobPhase
    epoch: EpochMetrics
    eta_seconds: float
    message: str
    progress: float
    def __init__(self, event_id: _Optional[int] = ..., job_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., epoch: _Optional[_Union[EpochMetrics, _Mapping]] = ..., eta_seconds: _Optional[float] = ..., message: _Optional[str] = ..., progress: _Optional[float] = ...) -> None: ...

"""The plain values of fine-tuning: jobs, events, metrics, datasets. No protobuf, no I/O.

The values the API returns as they are (a dataset, a job's metrics) are the client's own types
(:mod:`api_types.results`), defined once; the server adds only what it keeps about jobs.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

# API values, defined once with the client's other result types (JobState.done: the job has ended).
from api_types.results import ClassMetrics, Dataset, EpochMetrics, FineTuneMetrics, JobState
from server.finetune.hyperparameters import Hyperparameters


class JobPhase(enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    VALIDATING = "VALIDATING"
    EXTRACTING_FEATURES = "EXTRACTING_FEATURES"
    TRAINING = "TRAINING"
    EXPORTING = "EXPORTING"


def metrics_to_dict(metrics: FineTuneMetrics) -> dict[str, Any]:
    """A job's final metrics as JSON-ready values (stored with the job, sent by the worker)."""
    return dataclasses.asdict(metrics)


def metrics_from_dict(data: dict[str, Any]) -> FineTuneMetrics:
    return FineTuneMetrics(**{**data, "per_class": [ClassMetrics(**c) for c in data["per_class"]]})


@dataclass(frozen=True)
class Job:
    job_id: str
    state: JobState
    phase: JobPhase
    base_model: str
    base_version: int
    output_model: str
    hyperparameters: Hyperparameters
    dataset: Dataset
    created_at: float  # wall-clock seconds since the epoch, for display
    request_id: str = ""
    output_version: int = 0
    error: str = ""
    metrics: FineTuneMetrics | None = None
    artifacts: tuple[str, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class JobEvent:
    """One step of a job's history; ``event_id`` increases per job (resume a watch after it)."""

    job_id: str
    event_id: int
    time: float
    state: JobState
    phase: JobPhase
    message: str = ""
    progress: float = 0.0
    eta_seconds: float = 0.0
    epoch: EpochMetrics | None = None


@dataclass(frozen=True)
class StartRequest:
    """What StartFineTune asks for, in plain values. Exactly one of dataset_id and data_dir is set."""

    base_model: str
    base_version: int | None
    base_label: str | None
    output_model: str
    hyperparameters: Hyperparameters
    dataset_id: str | None = None
    data_dir: str | None = None
    request_id: str = ""

    def fingerprint(self) -> str:
        """Identifies the request's content, to tell a retry from a different request with a reused id."""
        import hashlib
        import json

        content = {k: v for k, v in dataclasses.asdict(self).items() if k != "request_id"}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class UploadInfo:
    """The optional first message of an upload."""

    name: str


@dataclass(frozen=True)
class UploadedImage:
    """One message of an upload stream."""

    label: str
    data: bytes = field(repr=False)
    filename: str = ""

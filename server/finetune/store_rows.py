"""The job store's tables, and the mapping between their rows and the plain values of
:mod:`server.finetune.jobs` (JSON columns, enums by name). Both databases use these.

Tables (times are wall-clock seconds since the epoch)::

    datasets(dataset_id PK, name, kind 'upload'|'directory', source, num_images,
             images_per_class JSON, created_at)
    jobs(seq PK, job_id UNIQUE, request_id UNIQUE NULL, request_fingerprint,
         state, phase, base_model, base_version, base_path, output_model, output_version,
         dataset_id -> datasets, hyperparameters JSON, metrics JSON NULL, artifacts JSON, error,
         created_at, started_at, finished_at, worker_pid NULL,
         owner NULL, lease_expires_at NULL, cancel_requested 0|1)
    events(job_id, event_id, time, state, phase, message, progress, eta_seconds, epoch JSON NULL,
           PRIMARY KEY (job_id, event_id))
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from server.finetune.datasets import imbalance_ratio
from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import (
    Dataset,
    EpochMetrics,
    Job,
    JobEvent,
    JobPhase,
    JobState,
    metrics_from_dict,
    metrics_to_dict,
)

Row = Mapping[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    num_images INTEGER NOT NULL,
    images_per_class TEXT NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq {seq},
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    request_fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    base_model TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    base_path TEXT NOT NULL,
    output_model TEXT NOT NULL,
    output_version INTEGER NOT NULL DEFAULT 0,
    dataset_id TEXT NOT NULL REFERENCES datasets(dataset_id),
    hyperparameters TEXT NOT NULL,
    metrics TEXT,
    artifacts TEXT NOT NULL DEFAULT '[]',
    error TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    started_at {real},
    finished_at {real},
    worker_pid INTEGER,
    owner TEXT,
    lease_expires_at {real},
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    time {real} NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    message TEXT NOT NULL,
    progress {real} NOT NULL,
    eta_seconds {real} NOT NULL,
    epoch TEXT,
    PRIMARY KEY (job_id, event_id)
);
"""


def schema(real: str, seq: str) -> str:
    """The tables, in a database's words for a float and an auto-numbered primary key."""
    return _SCHEMA.format(real=real, seq=seq)


JOB_COLUMNS = (
    "job_id, request_id, state, phase, base_model, base_version, output_model, output_version, "
    "dataset_id, hyperparameters, metrics, artifacts, error, created_at, started_at, finished_at, owner"
)
#: Job fields that :meth:`JobStore.update_job` may change.
UPDATABLE = {
    "state",
    "phase",
    "output_version",
    "metrics",
    "artifacts",
    "error",
    "started_at",
    "finished_at",
    "worker_pid",
}


def encode_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Job field values as their columns hold them."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    encoded = {}
    for key, value in changes.items():
        if isinstance(value, (JobState, JobPhase)):
            value = value.value
        elif key == "metrics":
            value = json.dumps(metrics_to_dict(value)) if value is not None else None
        elif key == "artifacts":
            value = json.dumps(list(value))
        encoded[key] = value
    return encoded


def job_from_row(row: Row, dataset: Dataset | None) -> Job:
    return Job(
        job_id=row["job_id"],
        request_id=row["request_id"] or "",
        state=JobState(row["state"]),
        phase=JobPhase(row["phase"]),
        base_model=row["base_model"],
        base_version=row["base_version"],
        output_model=row["output_model"],
        output_version=row["output_version"],
        dataset=dataset or Dataset(row["dataset_id"], "(deleted)", 0, {}, 0.0),
        hyperparameters=Hyperparameters.from_dict(json.loads(row["hyperparameters"])),
        metrics=metrics_from_dict(json.loads(row["metrics"])) if row["metrics"] else None,
        artifacts=tuple(json.loads(row["artifacts"])),
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def event_from_row(row: Row) -> JobEvent:
    return JobEvent(
        job_id=row["job_id"],
        event_id=row["event_id"],
        time=row["time"],
        state=JobState(row["state"]),
        phase=JobPhase(row["phase"]),
        message=row["message"],
        progress=row["progress"],
        eta_seconds=row["eta_seconds"],
        epoch=EpochMetrics(**json.loads(row["epoch"])) if row["epoch"] else None,
    )


def dataset_from_row(row: Row) -> Dataset:
    images_per_class = json.loads(row["images_per_class"])
    return Dataset(
        dataset_id=row["dataset_id"],
        name=row["name"],
        num_images=row["num_images"],
        images_per_class=images_per_class,
        imbalance_ratio=imbalance_ratio(images_per_class),
        created_at=dt.datetime.fromtimestamp(row["created_at"], dt.UTC) if row["created_at"] else None,
    )

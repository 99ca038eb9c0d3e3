"""The persistent record of datasets, jobs and their events: one SQLite file in the state directory.

Only the server process writes it (workers report over a pipe), from its event-loop thread; every
call is one short transaction. WAL mode keeps readers and the writer out of each other's way, and a
job's events survive a restart so that a watch can resume from any ``event_id``.

Schema (times are wall-clock seconds since the epoch, for display)::

    datasets(dataset_id PK, name, kind 'upload'|'directory', source, num_images,
             images_per_class JSON, created_at)
    jobs(seq INTEGER PK AUTOINCREMENT, job_id UNIQUE, request_id UNIQUE NULL, request_fingerprint,
         state, phase, base_model, base_version, base_path, output_model, output_version,
         dataset_id -> datasets, hyperparameters JSON, metrics JSON NULL, artifacts JSON, error,
         created_at, started_at, finished_at, worker_pid NULL)
    events(job_id, event_id, time, state, phase, message, progress, eta_seconds, epoch JSON NULL,
           PRIMARY KEY (job_id, event_id))
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import (
    DatasetSummary,
    EpochMetrics,
    FineTuneMetrics,
    Job,
    JobEvent,
    JobPhase,
    JobState,
)

DATABASE_FILE = "finetune.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    num_images INTEGER NOT NULL,
    images_per_class TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker_pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    time REAL NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    message TEXT NOT NULL,
    progress REAL NOT NULL,
    eta_seconds REAL NOT NULL,
    epoch TEXT,
    PRIMARY KEY (job_id, event_id)
);
"""

_JOB_COLUMNS = (
    "job_id, request_id, state, phase, base_model, base_version, output_model, output_version, "
    "dataset_id, hyperparameters, metrics, artifacts, error, created_at, started_at, finished_at"
)

#: Job fields that :meth:`JobStore.update_job` may change.
_UPDATABLE = {
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


class JobStore:
    """Datasets, jobs and events in ``<state_dir>/finetune.sqlite3``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: one connection, guarded by a lock: the event loop is the only regular user, but the
        # lock keeps a stray call from another thread (tests, executors) from corrupting a transaction.
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self._lock:
            self._db.execute(sql, tuple(params))

    def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = self._fetchall(sql, params)
        return rows[0] if rows else None

    # --- datasets --------------------------------------------------------------------------------

    def add_dataset(self, dataset: DatasetSummary, kind: str, source: str) -> None:
        self._execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                dataset.dataset_id,
                dataset.name,
                kind,
                source,
                dataset.num_images,
                json.dumps(dataset.images_per_class, sort_keys=True),
                dataset.created_at,
            ),
        )

    def get_dataset(self, dataset_id: str) -> DatasetSummary | None:
        row = self._fetchone("SELECT * FROM datasets WHERE dataset_id = ?", (dataset_id,))
        return _dataset(row) if row else None

    def dataset_kind(self, dataset_id: str) -> str | None:
        row = self._fetchone("SELECT kind FROM datasets WHERE dataset_id = ?", (dataset_id,))
        return row["kind"] if row else None

    # --- jobs ------------------------------------------------------------------------------------

    def add_job(self, job: Job, base_path: str, request_fingerprint: str) -> None:
        self._execute(
            "INSERT INTO jobs (job_id, request_id, request_fingerprint, state, phase, base_model, base_version, "
            "base_path, output_model, dataset_id, hyperparameters, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.job_id,
                job.request_id or None,
                request_fingerprint,
                job.state.value,
                job.phase.value,
                job.base_model,
                job.base_version,
                base_path,
                job.output_model,
                job.dataset.dataset_id,
                json.dumps(job.hyperparameters.to_dict(), sort_keys=True),
                job.created_at,
            ),
        )

    def get_job(self, job_id: str) -> Job | None:
        row = self._fetchone(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return self._job(row) if row else None

    def job_for_request(self, request_id: str) -> tuple[Job, str] | None:
        """The job started with ``request_id`` and the fingerprint of that request."""
        row = self._fetchone(
            f"SELECT {_JOB_COLUMNS}, request_fingerprint FROM jobs WHERE request_id = ?", (request_id,)
        )
        return (self._job(row), row["request_fingerprint"]) if row else None

    def worker_pid(self, job_id: str) -> int | None:
        """The pid of the job's (last) worker process, to find what it left behind."""
        row = self._fetchone("SELECT worker_pid FROM jobs WHERE job_id = ?", (job_id,))
        return row["worker_pid"] if row else None

    def base_path(self, job_id: str) -> str:
        return self._fetchone("SELECT base_path FROM jobs WHERE job_id = ?", (job_id,))["base_path"]

    def list_jobs(
        self, states: Iterable[JobState] = (), limit: int = 100, oldest_first: bool = False
    ) -> list[Job]:
        states = [s.value for s in states]
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        order = "ASC" if oldest_first else "DESC"
        rows = self._fetchall(
            f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY seq {order} LIMIT ?", (*states, limit)
        )
        return [self._job(row) for row in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self._fetchall("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def update_job(self, job_id: str, **changes: Any) -> Job:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        encoded = {}
        for key, value in changes.items():
            if isinstance(value, (JobState, JobPhase)):
                value = value.value
            elif key == "metrics":
                value = json.dumps(value.to_dict()) if value is not None else None
            elif key == "artifacts":
                value = json.dumps(list(value))
            encoded[key] = value
        assignments = ", ".join(f"{key} = ?" for key in encoded)
        self._execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*encoded.values(), job_id))
        job = self.get_job(job_id)
        assert job is not None
        return job

    def _job(self, row: sqlite3.Row) -> Job:
        dataset = self.get_dataset(row["dataset_id"])
        return Job(
            job_id=row["job_id"],
            request_id=row["request_id"] or "",
            state=JobState(row["state"]),
            phase=JobPhase(row["phase"]),
            base_model=row["base_model"],
            base_version=row["base_version"],
            output_model=row["output_model"],
            output_version=row["output_version"],
            dataset=dataset or DatasetSummary(row["dataset_id"], "(deleted)", 0, {}),
            hyperparameters=Hyperparameters.from_dict(json.loads(row["hyperparameters"])),
            metrics=FineTuneMetrics.from_dict(json.loads(row["metrics"])) if row["metrics"] else None,
            artifacts=tuple(json.loads(row["artifacts"])),
            error=row["error"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    # --- events ----------------------------------------------------------------------------------

    def append_event(
        self,
        job_id: str,
        state: JobState,
        phase: JobPhase,
        message: str = "",
        progress: float = 0.0,
        eta_seconds: float = 0.0,
        epoch: EpochMetrics | None = None,
    ) -> JobEvent:
        event_time = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute(
                    "SELECT COALESCE(MAX(event_id), 0) FROM events WHERE job_id = ?", (job_id,)
                ).fetchone()
                event = JobEvent(
                    job_id, last + 1, event_time, state, phase, message, progress, eta_seconds, epoch
                )
                self._db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        event.event_id,
                        event.time,
                        state.value,
                        phase.value,
                        message,
                        progress,
                        eta_seconds,
                        json.dumps(epoch.__dict__) if epoch else None,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return event

    def events_after(self, job_id: str, after_event_id: int, limit: int = 1000) -> list[JobEvent]:
        rows = self._fetchall(
            "SELECT * FROM events WHERE job_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
            (job_id, after_event_id, limit),
        )
        return [
            JobEvent(
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
            for row in rows
        ]


def _dataset(row: sqlite3.Row) -> DatasetSummary:
    return DatasetSummary(
        dataset_id=row["dataset_id"],
        name=row["name"],
        num_images=row["num_images"],
        images_per_class=json.loads(row["images_per_class"]),
        created_at=row["created_at"],
    )

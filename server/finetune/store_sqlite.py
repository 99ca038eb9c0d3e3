"""The embedded job store: one SQLite file in the state directory, used by one server.

Only the server process writes it (workers report over a pipe), from its event-loop thread; every
call is one short transaction. WAL mode keeps readers and the writer out of each other's way.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.finetune.store import JobStore, Row, Run

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

#: Columns added after the first release; a file written before gets them on open.
_ADDED_COLUMNS = {
    "owner": "TEXT",
    "lease_expires_at": "REAL",
    "cancel_requested": "INTEGER NOT NULL DEFAULT 0",
}


class SQLiteJobStore(JobStore):
    """Datasets, jobs and events in ``<state_dir>/finetune.sqlite3``."""

    shared = False
    NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: one connection, guarded by a lock: the event loop is the only regular user, but the
        # lock keeps a stray call from another thread (metrics, tests) from corrupting a transaction.
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
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, declaration in _ADDED_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {declaration}")

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        def run(sql: str, params: Sequence[Any]) -> list[Row]:
            return self._db.execute(sql, tuple(params)).fetchall()

        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield run
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

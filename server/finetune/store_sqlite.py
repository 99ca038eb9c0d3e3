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

from server.finetune.store import JobStore, Run
from server.finetune.store_rows import Row, schema

DATABASE_FILE = "finetune.sqlite3"


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
            self._db.executescript(schema(real="REAL", seq="INTEGER PRIMARY KEY AUTOINCREMENT"))
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

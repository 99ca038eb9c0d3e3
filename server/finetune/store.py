"""The persistent record of datasets, jobs and their events: one interface, two databases.

- :class:`~server.finetune.store_sqlite.SQLiteJobStore` (the default): ``<state_dir>/finetune.sqlite3``,
  embedded, needs no service; one server uses it.
- :class:`~server.finetune.store_postgres.PostgresJobStore` (``finetune_store = "postgresql://..."``):
  shared by every replica. Each replica reads any job; exactly one runs it (:meth:`JobStore.claim_next`
  takes the oldest QUEUED job with ``FOR UPDATE SKIP LOCKED``); the runner holds a lease (owner id and
  expiry, on the database's clock) that its heartbeat renews; writes are announced with NOTIFY.

The queries are written once, here, with ``?`` placeholders; an implementation supplies a connection,
its schema, its clock expression and how rows are locked. Every call is one short transaction. A job's
events survive restarts, so that a watch can resume from any ``event_id``.
The tables and the mapping between rows and values are in :mod:`server.finetune.store_rows`.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from server.finetune.jobs import Dataset, EpochMetrics, Job, JobEvent, JobPhase, JobState
from server.finetune.store_rows import (
    JOB_COLUMNS,
    Row,
    dataset_from_row,
    encode_changes,
    event_from_row,
    job_from_row,
)

#: Runs one statement inside a transaction and returns its rows (none for a statement without).
Run = Callable[[str, Sequence[Any]], list[Row]]
#: Called (from any thread) with ``(kind, job_id)`` when another server wrote: "event", "queued", "cancel".
Listener = Callable[[str, str], None]

_RUNNING = f"'{JobState.RUNNING.value}'"


@dataclass(frozen=True)
class Leases:
    """What a runner's heartbeat learns: the jobs it still holds, and which of them to cancel."""

    held: frozenset[str]
    cancel_requested: frozenset[str]


class JobStore(abc.ABC):
    """Datasets, jobs and events; see the module docstring."""

    #: True when other servers use the same store (their jobs are not ours to recover at start).
    shared: bool = False
    #: SQL for "now" on the database's clock, in seconds since the epoch (leases use one clock).
    NOW_SQL: str = ""
    #: Appended to a SELECT that picks rows to change: skip rows another server is changing.
    SKIP_LOCKED: str = ""
    #: Appended to a SELECT of the job row an event is appended to: one appender per job at a time.
    FOR_UPDATE: str = ""

    # --- what an implementation provides --------------------------------------------------------

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs (never a password)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Run]:
        """One transaction; its function runs statements in it. Commits on exit, rolls back on error."""

    def _announce(self, run: Run, kind: str, job_id: str) -> None:  # noqa: B027 - optional hook, empty by default
        """Tell other servers, at commit, that ``job_id`` changed (a shared store does)."""

    def listen(self, listener: Listener) -> None:  # noqa: B027 - optional hook, empty by default
        """Call ``listener`` when another server writes (a shared store does; the embedded one has none)."""

    # --- helpers ---------------------------------------------------------------------------------

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        with self._transaction() as run:
            return run(sql, tuple(params))

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    # --- datasets --------------------------------------------------------------------------------

    def add_dataset(self, dataset: Dataset, kind: str, source: str) -> None:
        self._all(
            "INSERT INTO datasets (dataset_id, name, kind, source, num_images, images_per_class, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                dataset.dataset_id,
                dataset.name,
                kind,
                source,
                dataset.num_images,
                json.dumps(dataset.images_per_class, sort_keys=True),
                dataset.created_at.timestamp() if dataset.created_at else 0.0,
            ),
        )

    def get_dataset(self, dataset_id: str) -> Dataset | None:
        row = self._one("SELECT * FROM datasets WHERE dataset_id = ?", (dataset_id,))
        return dataset_from_row(row) if row else None

    def dataset_kind(self, dataset_id: str) -> str | None:
        row = self._one("SELECT kind FROM datasets WHERE dataset_id = ?", (dataset_id,))
        return row["kind"] if row else None

    # --- jobs ------------------------------------------------------------------------------------

    def add_job(self, job: Job, base_path: str, request_fingerprint: str) -> None:
        with self._transaction() as run:
            run(
                "INSERT INTO jobs (job_id, request_id, request_fingerprint, state, phase, base_model, "
                "base_version, base_path, output_model, dataset_id, hyperparameters, created_at) "
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
            self._announce(run, "queued", job.job_id)

    def get_job(self, job_id: str) -> Job | None:
        row = self._one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return self._job(row) if row else None

    def job_owner(self, job_id: str) -> str | None:
        """The id of the server that runs (or last ran) the job."""
        row = self._one("SELECT owner FROM jobs WHERE job_id = ?", (job_id,))
        return row["owner"] if row else None

    def job_for_request(self, request_id: str) -> tuple[Job, str] | None:
        """The job started with ``request_id`` and the fingerprint of that request."""
        row = self._one(
            f"SELECT {JOB_COLUMNS}, request_fingerprint FROM jobs WHERE request_id = ?", (request_id,)
        )
        return (self._job(row), row["request_fingerprint"]) if row else None

    def worker_pid(self, job_id: str) -> int | None:
        """The pid of the job's (last) worker process, to find what it left behind."""
        row = self._one("SELECT worker_pid FROM jobs WHERE job_id = ?", (job_id,))
        return row["worker_pid"] if row else None

    def base_path(self, job_id: str) -> str:
        return self._one("SELECT base_path FROM jobs WHERE job_id = ?", (job_id,))["base_path"]

    def list_jobs(
        self, states: Iterable[JobState] = (), limit: int = 100, oldest_first: bool = False
    ) -> list[Job]:
        states = [s.value for s in states]
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        order = "ASC" if oldest_first else "DESC"
        rows = self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs {where} ORDER BY seq {order} LIMIT ?", (*states, limit)
        )
        return [self._job(row) for row in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def update_job(self, job_id: str, only_if: Iterable[JobState] = (), **changes: Any) -> Job | None:
        """Change the job's fields; with ``only_if``, only while the job is in one of those states
        (None otherwise: e.g. another server ended or claimed it first)."""
        encoded = encode_changes(changes)
        assignments = ", ".join(f"{key} = ?" for key in encoded)
        only_if = [s.value for s in only_if]
        condition = f" AND state IN ({', '.join('?' * len(only_if))})" if only_if else ""
        rows = self._all(
            f"UPDATE jobs SET {assignments} WHERE job_id = ?{condition} RETURNING job_id",
            (*encoded.values(), job_id, *only_if),
        )
        return self.get_job(job_id) if rows else None

    # --- running: claims, leases, cancellation ---------------------------------------------------

    def claim_next(self, owner: str, lease_s: float) -> Job | None:
        """Make the oldest QUEUED job RUNNING under ``owner``'s lease; two claimers never get the same job."""
        row = self._one(
            f"UPDATE jobs SET state = {_RUNNING}, owner = ?, lease_expires_at = {self.NOW_SQL} + ?, "
            "cancel_requested = 0, started_at = ? "
            f"WHERE seq = (SELECT seq FROM jobs WHERE state = '{JobState.QUEUED.value}' "
            f"ORDER BY seq LIMIT 1{self.SKIP_LOCKED}) RETURNING job_id",
            (owner, lease_s, time.time()),
        )
        return self.get_job(row["job_id"]) if row else None

    def renew_leases(self, owner: str, lease_s: float) -> Leases:
        """The heartbeat of ``owner``'s runners: extend the leases of its RUNNING jobs."""
        rows = self._all(
            f"UPDATE jobs SET lease_expires_at = {self.NOW_SQL} + ? WHERE owner = ? AND state = {_RUNNING} "
            "RETURNING job_id, cancel_requested",
            (lease_s, owner),
        )
        return Leases(
            frozenset(row["job_id"] for row in rows),
            frozenset(row["job_id"] for row in rows if row["cancel_requested"]),
        )

    def orphaned_jobs(self, owner: str, including_own: bool) -> list[tuple[Job, str | None]]:
        """RUNNING jobs whose lease expired (and, ``including_own``, ``owner``'s own from before a
        restart), with their owner: their runner is gone."""
        own = "owner IS NULL OR owner = ? OR " if including_own else ""
        rows = self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = {_RUNNING} "
            f"AND ({own}lease_expires_at < {self.NOW_SQL}) ORDER BY seq",
            (owner,) if including_own else (),
        )
        return [(self._job(row), row["owner"]) for row in rows]

    def take_over(self, job_id: str, owner: str, previous_owner: str | None, lease_s: float) -> bool:
        """Make ``owner`` the runner of an orphaned job (its own from before a restart, or one whose
        lease expired); False if another server took it first or its runner renewed the lease."""
        if previous_owner is None:
            condition, params = "owner IS NULL", ()
        elif previous_owner == owner:
            condition, params = "owner = ?", (owner,)
        else:
            condition, params = f"owner = ? AND lease_expires_at < {self.NOW_SQL}", (previous_owner,)
        rows = self._all(
            f"UPDATE jobs SET owner = ?, lease_expires_at = {self.NOW_SQL} + ? "
            f"WHERE job_id = ? AND state = {_RUNNING} AND {condition} RETURNING job_id",
            (owner, lease_s, job_id, *params),
        )
        return bool(rows)

    def request_cancel(self, job_id: str) -> bool:
        """Ask the job's runner (on any server) to cancel it; False if the job is not RUNNING."""
        with self._transaction() as run:
            rows = run(
                f"UPDATE jobs SET cancel_requested = 1 WHERE job_id = ? "
                f"AND state = {_RUNNING} RETURNING job_id",
                (job_id,),
            )
            if rows:
                self._announce(run, "cancel", job_id)
        return bool(rows)

    def requeue(self, job_id: str, owner: str, message: str) -> bool:
        """Put ``owner``'s RUNNING job back in the queue for another server, with its QUEUED event
        (one transaction, so the next runner's events follow it); False if it is not ``owner``'s or a
        cancel was requested."""
        queued = JobState.QUEUED.value
        with self._transaction() as run:
            rows = run(
                f"UPDATE jobs SET state = '{queued}', phase = '{JobPhase.UNSPECIFIED.value}', owner = NULL, "
                "lease_expires_at = NULL, started_at = NULL, worker_pid = NULL "
                f"WHERE job_id = ? AND owner = ? AND state = {_RUNNING} "
                "AND cancel_requested = 0 RETURNING job_id",
                (job_id, owner),
            )
            if rows:
                self._append_event(run, job_id, JobState.QUEUED, JobPhase.UNSPECIFIED, message)
                self._announce(run, "queued", job_id)
        return bool(rows)

    def _job(self, row: Row) -> Job:
        return job_from_row(row, self.get_dataset(row["dataset_id"]))

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
        with self._transaction() as run:
            event = self._append_event(run, job_id, state, phase, message, progress, eta_seconds, epoch)
            self._announce(run, "event", job_id)
        return event

    def _append_event(
        self,
        run: Run,
        job_id: str,
        state: JobState,
        phase: JobPhase,
        message: str,
        progress: float = 0.0,
        eta_seconds: float = 0.0,
        epoch: EpochMetrics | None = None,
    ) -> JobEvent:
        # The job's row lock orders appenders on different servers (the next id is MAX + 1).
        run(f"SELECT seq FROM jobs WHERE job_id = ?{self.FOR_UPDATE}", (job_id,))
        (last,) = run("SELECT COALESCE(MAX(event_id), 0) AS last FROM events WHERE job_id = ?", (job_id,))
        event = JobEvent(
            job_id, last["last"] + 1, time.time(), state, phase, message, progress, eta_seconds, epoch
        )
        run(
            "INSERT INTO events (job_id, event_id, time, state, phase, message, progress, eta_seconds, "
            "epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        return event

    def events_after(self, job_id: str, after_event_id: int, limit: int = 1000) -> list[JobEvent]:
        rows = self._all(
            "SELECT * FROM events WHERE job_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
            (job_id, after_event_id, limit),
        )
        return [event_from_row(row) for row in rows]


def open_store(url: str, state_dir) -> JobStore:
    """The store ``finetune_store`` names: empty for SQLite in ``state_dir``, or a PostgreSQL URL."""
    if url:
        from server.finetune.store_postgres import PostgresJobStore

        return PostgresJobStore(url)
    from server.finetune.store_sqlite import DATABASE_FILE, SQLiteJobStore

    return SQLiteJobStore(state_dir / DATABASE_FILE)

"""Every change of a job goes through the journal: written to the store first, then watchers woken.

A watcher takes :attr:`Journal.changed` *before* it reads the store, so a change written after its read
still wakes it. Changes made by other replicas of a shared store arrive through :meth:`Journal.notify`
too (the store's listener calls it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.finetune.jobs import Job, JobEvent, JobPhase, JobState
from server.finetune.store import JobStore

log = logging.getLogger("server.finetune.manager")


class Journal:
    """The store (once opened) and the wake-up of everything waiting on a change."""

    def __init__(self) -> None:
        self.store: JobStore | None = None
        self.changed = asyncio.Event()

    def event(self, job_id: str, state: JobState, phase: JobPhase, message: str, **fields) -> JobEvent:
        event = self.store.append_event(job_id, state, phase, message, **fields)
        self.notify()
        return event

    def finish(self, job_id: str, state: JobState, message: str, **changes) -> Job:
        """End the job (unless another server ended it first: then its outcome stands)."""
        if changes.get("metrics") is None:
            changes.pop("metrics", None)
        if state is JobState.FAILED:
            changes.setdefault("error", message)  # a FAILED job always says why
        job = self.store.update_job(
            job_id,
            only_if=(JobState.QUEUED, JobState.RUNNING),
            state=state,
            finished_at=time.time(),
            **changes,
        )
        if job is None:
            job = self.store.get_job(job_id)
            log.warning(
                "job %s: already %s (by another server); not marking it %s",
                job_id,
                job.state.value,
                state.value,
            )
            return job
        self.event(job_id, state, job.phase, message, progress=1.0 if state is JobState.SUCCEEDED else 0.0)
        return job

    def requeue(self, job_id: str, owner: str, message: str) -> bool:
        """Back to the queue for another replica (see :meth:`JobStore.requeue`)."""
        requeued = self.store.requeue(job_id, owner, message)
        self.notify()
        return requeued

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

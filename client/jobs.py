"""Handles on fine-tuning jobs, returned by ``fine_tune``: :class:`FineTuneJob` and :class:`AsyncFineTuneJob`.

A handle holds a client and the job's last known :class:`~client.results.JobStatus`; each method is
one call of the client's job methods (``get_job``, ``wait_job``, ``cancel_job``, ``watch_job``) and
keeps the status it gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from client.errors import FineTuneFailed
from client.progress import ProgressOption
from client.results import JobEvent, JobPhase, JobState, JobStatus

if TYPE_CHECKING:
    from client.aio import AsyncModelClient
    from client.sync import ModelClient

__all__ = ["FineTuneJob", "AsyncFineTuneJob"]


class _Handle:
    def __init__(self, status: JobStatus) -> None:
        #: The job as last reported by the server (by the call that returned this handle, or the
        #: latest refresh, wait or cancel).
        self.status = status

    @property
    def job_id(self) -> str:
        return self.status.job_id

    @property
    def state(self) -> JobState:
        """The last known state (``refresh()`` asks the server)."""
        return self.status.state

    @property
    def phase(self) -> JobPhase:
        """The last known phase."""
        return self.status.phase

    def __repr__(self) -> str:
        name, output = type(self).__name__, self.status.output_model
        return f"{name}({self.job_id!r}, state={self.state.name}, output_model={output!r})"


class FineTuneJob(_Handle):
    """A fine-tuning job on the server, as returned by ``ModelClient.fine_tune``.

    ::

        job = client.fine_tune("photos/", output_model="flowers")
        final = job.wait()  # a progress bar when stderr is a terminal
        print(final.output_version, final.metrics.val_accuracy)
    """

    def __init__(self, client: ModelClient, status: JobStatus) -> None:
        super().__init__(status)
        self.client = client

    def refresh(self, *, timeout: float | None = None) -> JobStatus:
        """Ask the server for the job's status now."""
        self.status = self.client.get_job(self.job_id, timeout=timeout)
        return self.status

    def wait(
        self, timeout: float | None = None, progress: ProgressOption = None, *, raise_on_failure: bool = True
    ) -> JobStatus:
        """Follow the job until it ends and return its final status; see :meth:`ModelClient.wait_job
        <client.ModelClient.wait_job>` (FineTuneFailed when it FAILED, FineTuneCancelled when CANCELLED)."""
        try:
            self.status = self.client.wait_job(
                self.job_id, timeout=timeout, progress=progress, raise_on_failure=raise_on_failure
            )
        except FineTuneFailed as failed:
            self.status = failed.job
            raise
        return self.status

    def cancel(self, *, timeout: float | None = None) -> JobStatus:
        """Cancel the job (QUEUED or RUNNING): it ends CANCELLED and publishes nothing."""
        self.status = self.client.cancel_job(self.job_id, timeout=timeout)
        return self.status

    def events(self, after_event_id: int = 0, *, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events after ``after_event_id`` (0: from the start), live until the job ends."""
        return self.client.watch_job(self.job_id, after_event_id, timeout=timeout)


class AsyncFineTuneJob(_Handle):
    """The :class:`FineTuneJob` of :class:`~client.AsyncModelClient`: the same methods, as coroutines
    (``events`` is an async iterator)."""

    def __init__(self, client: AsyncModelClient, status: JobStatus) -> None:
        super().__init__(status)
        self.client = client

    async def refresh(self, *, timeout: float | None = None) -> JobStatus:
        """Ask the server for the job's status now."""
        self.status = await self.client.get_job(self.job_id, timeout=timeout)
        return self.status

    async def wait(
        self, timeout: float | None = None, progress: ProgressOption = None, *, raise_on_failure: bool = True
    ) -> JobStatus:
        """Follow the job until it ends and return its final status; see :meth:`FineTuneJob.wait`."""
        try:
            self.status = await self.client.wait_job(
                self.job_id, timeout=timeout, progress=progress, raise_on_failure=raise_on_failure
            )
        except FineTuneFailed as failed:
            self.status = failed.job
            raise
        return self.status

    async def cancel(self, *, timeout: float | None = None) -> JobStatus:
        """Cancel the job: it ends CANCELLED and publishes nothing."""
        self.status = await self.client.cancel_job(self.job_id, timeout=timeout)
        return self.status

    def events(self, after_event_id: int = 0, *, timeout: float | None = None) -> AsyncIterator[JobEvent]:
        """The job's events after ``after_event_id``, live until the job ends (``async for``)."""
        return self.client.watch_job(self.job_id, after_event_id, timeout=timeout)

"""Handles on fine-tuning jobs, returned by ``fine_tune``: :class:`FineTuneJob` and :class:`AsyncFineTuneJob`.

A handle holds a client and the job's last known :class:`~api_types.results.JobStatus`; each method is
one of the client's job operations (``get_job``, ``wait_job``, ``cancel_job``, ``watch_job``), run by
that client, and keeps the status it gets. The methods are written once for both kinds of handle.
"""

from __future__ import annotations

from typing import Any

from api_types.results import JobEvent, JobPhase, JobState, JobStatus
from client.base import ClientBase
from client.errors import FineTuneFailed
from client.methods import AsyncAPI, SyncAPI, call, streaming
from client.operations import Operation
from client.progress import ProgressOption

__all__ = ["FineTuneJob", "AsyncFineTuneJob"]


class JobHandle:
    """The methods of both handles, written once (see :mod:`client.methods`); ``client`` runs them."""

    def __init__(self, client: ClientBase, status: JobStatus) -> None:
        self.client = client
        #: The job as last reported by the server (by the call that returned this handle, or the
        #: latest refresh, wait or cancel).
        self.status = status

    @property
    def _runner(self) -> Any:
        return self.client

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

    def _keep(self, operation: Operation[JobStatus]) -> Operation[JobStatus]:
        """Run ``operation`` and keep the status it ends with (also a failed job's, when it raises)."""
        try:
            self.status = yield from operation
        except FineTuneFailed as failed:
            self.status = failed.job
            raise
        return self.status

    @call
    def refresh(self, *, timeout: float | None = None) -> Operation[JobStatus]:
        """Ask the server for the job's status now."""
        return self._keep(self.client._jobs.get_job(self.job_id, timeout))

    @call
    def wait(
        self, timeout: float | None = None, progress: ProgressOption = None, *, raise_on_failure: bool = True
    ) -> Operation[JobStatus]:
        """Follow the job until it ends and return its final status; see :meth:`ModelClient.wait_job
        <client.ModelClient.wait_job>` (FineTuneFailed when it FAILED, FineTuneCancelled when CANCELLED)."""
        jobs = self.client._jobs
        return self._keep(jobs.wait_job_with_progress(self.job_id, timeout, progress, raise_on_failure))

    @call
    def cancel(self, *, timeout: float | None = None) -> Operation[JobStatus]:
        """Cancel the job (QUEUED or RUNNING): it ends CANCELLED and publishes nothing."""
        return self._keep(self.client._jobs.cancel_job(self.job_id, timeout))

    @streaming(JobEvent)
    def events(self, after_event_id: int = 0, *, timeout: float | None = None) -> Operation[JobEvent | None]:
        """The job's events after ``after_event_id`` (0: from the start), live until the job ends."""
        return self.client._jobs.watch_job(self.job_id, after_event_id, timeout)


class FineTuneJob(JobHandle, SyncAPI):
    """A fine-tuning job on the server, as returned by ``ModelClient.fine_tune``.

    ::

        job = client.fine_tune("photos/", output_model="flowers")
        final = job.wait()  # a progress bar when stderr is a terminal
        print(final.output_version, final.metrics.val_accuracy)
    """


class AsyncFineTuneJob(JobHandle, AsyncAPI):
    """The :class:`FineTuneJob` of :class:`~client.AsyncModelClient`: the same methods, as coroutines
    (``events`` is an async iterator)."""

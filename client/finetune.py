"""The fine-tuning operations, written once for both clients (no I/O here; see :mod:`client.operations`).

- **Uploads** stream one ``UploadDataset`` message per image, reading and encoding each image just
  before it is sent. An image larger than the server's message limit is refused before it is sent.
  UNAVAILABLE restarts the upload from the first image when the images can be read again (see
  :mod:`client.datasets`); the server keeps nothing of an upload that did not complete.
- **StartFineTune** always carries a ``request_id`` (a random one unless the caller gives one), so a
  retry after UNAVAILABLE returns the job the first attempt may have started instead of a second job.
- **Watching** follows ``WatchFineTuneJob`` until the job ends. A stream that breaks (UNAVAILABLE,
  or CANCELLED when the server shuts down) or ends before the job has ended is reopened after the
  last event seen (``after_event_id``), with the client's backoff; the retry count starts afresh
  after every event received.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from api_types.results import Dataset, Hyperparameters, JobEvent, JobState, JobStatus, ServerInfo
from client import convert
from client.datasets import DatasetImages, DatasetSource
from client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FineTuneCancelled,
    FineTuneFailed,
    InvalidImage,
    Unavailable,
)
from client.images import encode_image
from client.operations import (
    CloseUpload,
    Deadline,
    Emit,
    OpenStream,
    OpenUpload,
    Operation,
    Operations,
    Receive,
    Send,
)
from client.progress import ProgressOption, job_progress
from protos.imageserve.v1 import image_service_pb2 as pb

__all__ = ["FineTuneOperations", "DEFAULT_BASE_MODEL", "DEFAULT_LIST_LIMIT", "WATCH_SEGMENT_S"]

DEFAULT_BASE_MODEL = "vgg16"
#: Jobs listed when no limit is given (the server's default too).
DEFAULT_LIST_LIMIT = 100
#: NOTE: a watch is reopened (after its last event) at least this often, so that a connection that
#: died silently (no reset, e.g. a NAT dropping it) is noticed within this time, not never.
WATCH_SEGMENT_S = 60.0

#: Called with each event while waiting (a progress bar).
EventCallback = Callable[[JobEvent], None]
#: What ``hyperparameters=`` takes: the dataclass, a mapping of its fields, or None (server defaults).
HyperparametersLike = Hyperparameters | Mapping[str, Any] | None
#: What ``states=`` takes: one state or several, as JobState or names ("FAILED").
StatesLike = JobState | str | Iterable[JobState | str] | None


@dataclass
class _UploadProgress:
    """How many images one upload attempt has taken from its source (to know if it can be resent)."""

    images: int = 0


def as_hyperparameters(value: HyperparametersLike) -> Hyperparameters:
    if value is None:
        return Hyperparameters()
    if isinstance(value, Hyperparameters):
        return value
    if isinstance(value, Mapping):
        return Hyperparameters(**value)
    raise TypeError(
        f"hyperparameters: expected Hyperparameters or a dict of its fields, got {type(value).__name__}"
    )


def as_states(states: StatesLike) -> list[JobState]:
    if states is None:
        return []
    if isinstance(states, (JobState, str)):
        states = [states]
    parsed: list[JobState] = []
    for state in states:
        if isinstance(state, JobState) and state is not JobState.UNSPECIFIED:
            parsed.append(state)
        elif (
            isinstance(state, str)
            and state.upper() in JobState.__members__
            and state.upper() != "UNSPECIFIED"
        ):
            parsed.append(JobState[state.upper()])
        else:
            known = ", ".join(s.name for s in JobState if s is not JobState.UNSPECIFIED)
            raise ValueError(f"unknown job state {state!r}; known: {known}")
    return parsed


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be a non-empty str (e.g. 'ft-1a2b...'), got {job_id!r}")


def _ignore(event: JobEvent) -> None:
    """The event callback of a wait without progress."""


def check_outcome(status: JobStatus) -> JobStatus:
    """``status`` if the job SUCCEEDED (or has not ended); FineTuneFailed/FineTuneCancelled otherwise."""
    if status.state is JobState.FAILED:
        raise FineTuneFailed(status)
    if status.state is JobState.CANCELLED:
        raise FineTuneCancelled(status)
    return status


class FineTuneOperations:
    """Uploads, jobs, watches and waits, on the building blocks of the client's :class:`Operations`."""

    def __init__(self, core: Operations) -> None:
        self.core = core

    # --- datasets ----------------------------------------------------------------------------------

    def upload_dataset(
        self, images: DatasetImages, name: str | None, timeout: float | None
    ) -> Operation[Dataset]:
        # NOTE: a generator, so the images are checked (a directory scanned) in the operation's
        # first step, before anything is sent: the async client runs that step off the event loop.
        deadline = self.core.deadline(timeout)
        source = DatasetSource(images, name)
        return (yield from self._upload(source, deadline))

    def _upload(self, source: DatasetSource, deadline: Deadline) -> Operation[Dataset]:
        info = yield from self.core.limits(deadline)
        attempt = 1
        while True:
            progress = _UploadProgress()
            try:
                return (yield from self._upload_once(source, info, deadline, progress))
            except Unavailable as error:
                if progress.images and not source.replayable:
                    error.note = (
                        f"the connection broke after {progress.images} images of a one-pass iterable, which "
                        "cannot be sent again: pass a list of (label, image) pairs or a dict of lists to let "
                        "the client retry"
                    )
                    raise
                yield from self.core.backoff("UploadDataset", error, attempt, deadline)
                attempt += 1
            except DeadlineExceeded as error:
                error.note = (
                    f"the upload's timeout is {deadline.timeout:g} s; pass a larger timeout for this dataset"
                )
                raise

    def _upload_once(
        self, source: DatasetSource, info: ServerInfo, deadline: Deadline, progress: _UploadProgress
    ) -> Operation[Dataset]:
        call = yield OpenUpload("UploadDataset", self.core.time_left("UploadDataset", deadline))
        if source.name:
            yield Send(call, convert.upload_info(source.name))
        limit = info.max_receive_message_bytes
        for index, item in enumerate(source):
            progress.images += 1
            data = encode_image(item.image)
            if convert.upload_message_bytes(item.label, data, item.filename) > limit:
                raise InvalidImage.at(
                    index,
                    f"{item.filename or 'the image'} (label {item.label!r}) is {len(data):,} bytes "
                    f"encoded; the server accepts messages of at most {limit:,} bytes: downscale it or "
                    "encode it as JPEG",
                    note="refused by the client; the server kept nothing of this upload",
                )
            yield Send(call, convert.upload_image(item.label, data, item.filename))
        response = yield CloseUpload(call)
        return convert.dataset(response)

    # --- jobs --------------------------------------------------------------------------------------

    def fine_tune(
        self,
        dataset: Dataset | DatasetImages | None,
        data_dir: str | None,
        output_model: str,
        base_model: str,
        base_version: int | None,
        base_label: str | None,
        hyperparameters: HyperparametersLike,
        request_id: str | None,
        dataset_name: str | None,
        timeout: float | None,
    ) -> Operation[JobStatus]:
        if not isinstance(output_model, str) or not output_model:
            raise ValueError(
                "output_model must name the model to publish a new version of, e.g. 'flowers'; "
                f"got {output_model!r}"
            )
        if (dataset is None) == (data_dir is None):
            raise ValueError(
                "pass the training images either as dataset (a local directory to upload, images by label, "
                "or a Dataset from upload_dataset) or as data_dir (a directory under the server's data root)"
                + (", not both" if dataset is not None else "")
            )
        if data_dir is not None and not isinstance(data_dir, str):
            raise TypeError(
                "data_dir is a path relative to the server's data root, as a str; "
                f"got {type(data_dir).__name__} (to upload a local directory, pass it as dataset)"
            )
        base = convert.model_spec(base_model, base_version, base_label)
        hp = as_hyperparameters(hyperparameters)
        # NOTE: always an idempotency key, so that a retry of StartFineTune after UNAVAILABLE (the
        # first attempt may have reached the server) returns that job instead of starting another.
        key = request_id if request_id is not None else f"client-{uuid.uuid4().hex}"
        return self._fine_tune(dataset, dataset_name, data_dir, output_model, base, hp, key, timeout)

    def _fine_tune(
        self,
        dataset: Dataset | DatasetImages | None,
        dataset_name: str | None,
        data_dir: str | None,
        output_model: str,
        base: pb.ModelSpec,
        hyperparameters: Hyperparameters,
        request_id: str,
        timeout: float | None,
    ) -> Operation[JobStatus]:
        deadline = self.core.deadline(timeout)
        source = None
        dataset_id = dataset.dataset_id if isinstance(dataset, Dataset) else None
        if dataset is not None and not isinstance(dataset, Dataset):
            source = DatasetSource(dataset, dataset_name)  # in the first step: see upload_dataset
            uploaded = yield from self._upload(source, deadline)
            dataset_id = uploaded.dataset_id
        request = convert.start_request(base, output_model, hyperparameters, request_id, dataset_id, data_dir)
        try:
            response = yield from self.core.unary("StartFineTune", request, deadline)
        except AlreadyExists as error:
            if source is not None:
                error.note = (
                    "images passed to fine_tune are uploaded anew on every call, as a new dataset, so a "
                    "repeated request_id cannot match: upload once with upload_dataset() and pass the Dataset"
                )
            raise
        return convert.job_status(response)

    def get_job(self, job_id: str, timeout: float | None) -> Operation[JobStatus]:
        _check_job_id(job_id)
        return self.core.single(
            "GetFineTuneJob", pb.GetFineTuneJobRequest(job_id=job_id), convert.job_status, timeout
        )

    def list_jobs(self, states: StatesLike, limit: int, timeout: float | None) -> Operation[list[JobStatus]]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        request = convert.list_jobs_request(as_states(states), limit)
        return self.core.single("ListFineTuneJobs", request, convert.job_list, timeout)

    def cancel_job(self, job_id: str, timeout: float | None) -> Operation[JobStatus]:
        _check_job_id(job_id)
        return self.core.single(
            "CancelFineTuneJob", pb.CancelFineTuneJobRequest(job_id=job_id), convert.job_status, timeout
        )

    # --- watching and waiting ----------------------------------------------------------------------

    def watch_job(
        self, job_id: str, after_event_id: int, timeout: float | None
    ) -> Operation[JobEvent | None]:
        """Emits each event after ``after_event_id`` until the job ends (or ``timeout`` passes)."""
        _check_job_id(job_id)
        if isinstance(after_event_id, bool) or not isinstance(after_event_id, int) or after_event_id < 0:
            raise ValueError(f"after_event_id must be an int >= 0, got {after_event_id!r}")
        return self._follow(job_id, after_event_id, self._wait_deadline(timeout), None)

    def wait_job(
        self, job_id: str, timeout: float | None, on_event: EventCallback | None, raise_on_failure: bool
    ) -> Operation[JobStatus]:
        _check_job_id(job_id)
        # A callback that ignores the events: without one, _follow would emit them.
        follow = on_event if on_event is not None else _ignore
        return self._wait(job_id, self._wait_deadline(timeout), follow, raise_on_failure)

    def wait_job_with_progress(
        self, job_id: str, timeout: float | None, progress: ProgressOption, raise_on_failure: bool
    ) -> Operation[JobStatus]:
        """:meth:`wait_job`, its events drawn as a progress bar (or given to ``progress``, a callable);
        the bar is closed when the operation ends, however it ends."""
        with job_progress(progress) as on_event:
            return (yield from self.wait_job(job_id, timeout, on_event, raise_on_failure))

    @staticmethod
    def _wait_deadline(timeout: float | None) -> Deadline:
        if timeout is None:
            return Deadline.unbounded()
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds (or None: until the job ends), got {timeout}")
        return Deadline(timeout)

    def _wait(
        self, job_id: str, deadline: Deadline, on_event: EventCallback, raise_on_failure: bool
    ) -> Operation[JobStatus]:
        try:
            yield from self._follow(job_id, 0, deadline, on_event)
        except DeadlineExceeded:
            status = yield from self._get(job_id, Deadline(self.core.timeout))
            if not status.done:
                running = status.state is JobState.RUNNING
                where = status.state.name + (f", {status.phase.name}" if running else "")
                raise DeadlineExceeded(
                    f"fine-tuning job {job_id} is still {where} after {deadline.timeout:g} s",
                    note="it goes on: wait again, or cancel it",
                ) from None
        status = yield from self._get(job_id, Deadline(self.core.timeout))
        return check_outcome(status) if raise_on_failure else status

    def _get(self, job_id: str, deadline: Deadline) -> Operation[JobStatus]:
        response = yield from self.core.unary(
            "GetFineTuneJob", pb.GetFineTuneJobRequest(job_id=job_id), deadline
        )
        return convert.job_status(response)

    def _follow(
        self, job_id: str, after_event_id: int, deadline: Deadline, on_event: EventCallback | None
    ) -> Operation[JobEvent | None]:
        """Each event after ``after_event_id`` to ``on_event`` (or emitted) until the job has ended;
        returns the last event seen (None if there was none)."""
        method = "WatchFineTuneJob"
        last: JobEvent | None = None
        after = after_event_id
        attempt = 1
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"{method}: job {job_id} had not ended after {deadline.timeout:g} s",
                    note="pass a larger timeout",
                )
            segment = min(remaining, WATCH_SEGMENT_S)
            try:
                stream = yield OpenStream(
                    method, pb.WatchFineTuneJobRequest(job_id=job_id, after_event_id=after), segment
                )
                while (message := (yield Receive(stream))) is not None:
                    last = convert.job_event(message)
                    after, attempt = last.event_id, 1
                    if on_event is None:
                        yield Emit(last)
                    else:
                        on_event(last)
            except Unavailable as error:
                broken = error
            except Cancelled as error:  # the server cancels open streams when it shuts down
                broken = Unavailable(f"the server cancelled the watch of job {job_id}: {error.details}")
            except DeadlineExceeded:
                if segment < remaining:
                    continue  # only this stream's segment ended, not the wait: reopen it
                raise DeadlineExceeded(
                    f"{method}: job {job_id} had not ended after {deadline.timeout:g} s",
                    note="pass a larger timeout",
                ) from None
            else:
                if last is not None and last.state.done:
                    return last
                status = yield from self._get(job_id, deadline.capped(self.core.timeout))
                if status.done:
                    return last
                broken = Unavailable(f"the server ended the watch of job {job_id} before the job ended")
            yield from self.core.backoff(method, broken, attempt, deadline)
            attempt += 1

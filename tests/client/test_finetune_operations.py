"""The fine-tuning operations' retry decisions, driven without a server: each effect is answered by a
script, as a client would answer it from the network (the operations do no I/O themselves)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from client import Dataset, DeadlineExceeded, InvalidImage, JobEvent, JobState, Unavailable
from client.errors import FineTuneCancelled, FineTuneFailed, ImageServeError
from client.finetune import FineTuneOperations
from client.operations import (
    Call,
    CloseUpload,
    Done,
    Emit,
    OpenStream,
    OpenUpload,
    Operation,
    Operations,
    Receive,
    Send,
    Sleep,
    advance,
)
from client.options import RetryPolicy
from protos.imageserve.v1 import image_service_pb2 as pb

LIMITS = pb.ServerInfo(max_images_per_request=64, max_receive_message_bytes=1000)


def operations() -> FineTuneOperations:
    retry = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.02)
    return FineTuneOperations(Operations(timeout=10.0, retry=retry, rng=random.Random(0)))


def drive(operation: Operation[Any], answer: Callable[[Any], Any]) -> tuple[Any, list[Any], list[Any]]:
    """Run ``operation``, answering each call effect with ``answer(effect)`` (which may raise an
    ImageServeError for the call to fail); returns (value, effects, emitted values)."""
    effects: list[Any] = []
    emitted: list[Any] = []
    step = advance(operation)
    while not isinstance(step, Done):
        effects.append(step)
        if isinstance(step, (Emit, Sleep)):
            if isinstance(step, Emit):
                emitted.append(step.value)
            step = advance(operation)
            continue
        try:
            response = answer(step)
        except ImageServeError as error:
            step = advance(operation, error=error)
        else:
            step = advance(operation, response)
    return step.value, effects, emitted


class UploadServer:
    """Answers an upload; the first attempt breaks (UNAVAILABLE) at its ``break_at``-th image."""

    def __init__(self, break_at: int | None) -> None:
        self.break_at = break_at
        self.attempts: list[list[pb.UploadDatasetRequest]] = []

    def __call__(self, effect: Any) -> Any:
        if isinstance(effect, Call) and effect.method == "GetServerInfo":
            return LIMITS
        if isinstance(effect, OpenUpload):
            self.attempts.append([])
            return len(self.attempts)
        if isinstance(effect, Send):
            self.attempts[-1].append(effect.message)
            images = sum(m.HasField("image") for m in self.attempts[-1])
            if len(self.attempts) == 1 and images == self.break_at:
                raise Unavailable("Socket closed")
            return None
        if isinstance(effect, CloseUpload):
            sent = [m.image for m in self.attempts[-1] if m.HasField("image")]
            return pb.Dataset(dataset_id="ds-1", name="x", num_images=len(sent))
        raise AssertionError(f"unexpected {effect}")


def test_an_upload_that_can_be_read_again_restarts_after_unavailable():
    server = UploadServer(break_at=2)
    pairs = [("a", b"image-0"), ("b", b"image-1"), ("a", b"image-2")]
    dataset, effects, _ = drive(operations().upload_dataset(pairs, "x", None), server)
    assert dataset.dataset_id == "ds-1" and dataset.num_images == 3
    assert len(server.attempts) == 2 and sum(isinstance(e, Sleep) for e in effects) == 1
    second = server.attempts[1]
    assert second[0].info.name == "x"
    assert [(m.image.label, m.image.image) for m in second[1:]] == [(label, data) for label, data in pairs]


def test_an_upload_from_a_generator_is_not_resent_once_started():
    server = UploadServer(break_at=2)
    pairs = ((label, data) for label, data in [("a", b"image-0"), ("b", b"image-1"), ("a", b"image-2")])
    with pytest.raises(Unavailable) as caught:
        drive(operations().upload_dataset(pairs, None, None), server)
    assert len(server.attempts) == 1
    assert "after 2 images of a one-pass iterable, which cannot be sent again" in str(caught.value)


def test_an_image_over_the_message_limit_is_refused_before_it_is_sent():
    server = UploadServer(break_at=None)
    pairs = [("a", b"small"), ("a", b"x" * 2000)]
    with pytest.raises(InvalidImage) as caught:
        drive(operations().upload_dataset(pairs, None, None), server)
    assert caught.value.index == 1 and "2,000 bytes encoded" in str(caught.value)
    assert "at most 1,000 bytes" in str(caught.value)
    assert [m.image.image for m in server.attempts[0]] == [b"small"]


def _job(state: int = pb.QUEUED, **fields: Any) -> pb.FineTuneJob:
    return pb.FineTuneJob(job_id="ft-1", state=state, output_model="out", **fields)


def test_start_is_retried_with_the_same_request_id():
    starts: list[pb.StartFineTuneRequest] = []

    def answer(effect: Any) -> Any:
        starts.append(effect.request)
        if len(starts) == 1:
            raise Unavailable("connection reset")  # the server may have started the job
        return _job(request_id=effect.request.request_id)

    dataset = Dataset("ds-1", "x", 12, {"a": 6, "b": 6}, 1.0)
    operation = operations().fine_tune(
        dataset, None, "out", "vgg16", None, None, {"epochs": 3}, None, None, None
    )
    status, _effects, _ = drive(operation, answer)
    assert len(starts) == 2 and starts[0].request_id == starts[1].request_id
    assert starts[0].request_id.startswith("client-") and status.request_id == starts[0].request_id
    assert starts[0].dataset_id == "ds-1" and starts[0].hyperparameters.epochs == 3
    assert not starts[0].hyperparameters.HasField("dropout")  # unset: the server's default


def _event(event_id: int, state: int = pb.RUNNING) -> pb.FineTuneEvent:
    return pb.FineTuneEvent(event_id=event_id, job_id="ft-1", state=state, message=f"event {event_id}")


class WatchServer:
    """Answers watches from a script: one entry per stream opened, each the events it sends and what
    ends it (an error, or None: the stream ends); GetFineTuneJob answers ``job_state``."""

    def __init__(self, streams: list[tuple[list[pb.FineTuneEvent], ImageServeError | None]], job_state: int):
        self.streams = streams
        self.job_state = job_state
        self.after_event_ids: list[int] = []
        self.gets = 0

    def __call__(self, effect: Any) -> Any:
        if isinstance(effect, OpenStream):
            self.after_event_ids.append(effect.request.after_event_id)
            events, end = self.streams[len(self.after_event_ids) - 1]
            return iter([*events, end])
        if isinstance(effect, Receive):
            item = next(effect.stream)
            if isinstance(item, ImageServeError):
                raise item
            return item
        if isinstance(effect, Call) and effect.method == "GetFineTuneJob":
            self.gets += 1
            return _job(self.job_state)
        raise AssertionError(f"unexpected {effect}")


def test_a_watch_resumes_after_a_break_and_after_a_stream_that_ended_early():
    server = WatchServer(
        [
            ([_event(1), _event(2)], Unavailable("Socket closed")),
            ([_event(3)], None),  # ended, but the job has not: the server was shutting down
            ([], DeadlineExceeded("Deadline Exceeded")),  # a quiet minute: only the stream's own deadline
            ([_event(4, pb.SUCCEEDED)], None),
        ],
        job_state=pb.RUNNING,
    )
    last, effects, emitted = drive(operations().watch_job("ft-1", 0, None), server)
    assert [e.event_id for e in emitted] == [1, 2, 3, 4] and last == emitted[-1]
    assert server.after_event_ids == [0, 2, 3, 3]
    assert server.gets == 1  # asked once, after the stream that ended before the job
    assert sum(isinstance(e, Sleep) for e in effects) == 2  # after the break and the early end only


def test_a_watch_gives_up_after_the_retries():
    streams = [([_event(1)], Unavailable("Socket closed"))] + [([], Unavailable("Connection refused"))] * 9
    server = WatchServer(streams, pb.RUNNING)
    with pytest.raises(Unavailable, match="Connection refused") as caught:
        drive(operations().watch_job("ft-1", 0, None), server)
    # The event reset the count: three retries after the break, each from after event 1.
    assert caught.value.attempts == 4 and server.after_event_ids == [0, 1, 1, 1]


def test_wait_returns_the_final_status_or_raises_for_a_failed_job():
    outcomes = [(pb.SUCCEEDED, None), (pb.FAILED, FineTuneFailed), (pb.CANCELLED, FineTuneCancelled)]
    for state, expected in outcomes:
        server = WatchServer([([_event(1), _event(2)], None)], job_state=state)
        seen: list[JobEvent] = []
        operation = operations().wait_job("ft-1", None, seen.append, True)
        if expected is None:
            status, _, emitted = drive(operation, server)
            assert status.state is JobState.SUCCEEDED and emitted == []
            assert [e.event_id for e in seen] == [1, 2]
        else:
            with pytest.raises(expected) as caught:
                drive(operation, server)
            assert type(caught.value) is expected and caught.value.job.state.name == pb.JobState.Name(state)

"""What a client call does, written once for the sync and the async client (no I/O in here).

An operation is a generator that yields *effects*, a gRPC call to make (:class:`Call`) or a pause
(:class:`Sleep`), and receives each call's response, or has the call's error thrown into it as an
:class:`~client.errors.ImageServeError`. The clients only perform effects: :class:`~client.ModelClient`
with blocking stubs and ``time.sleep``, :class:`~client.AsyncModelClient` with ``grpc.aio`` and
``asyncio.sleep``. Deadlines, retries, chunking, version pinning and error indices live here.

Streaming RPCs are effects too: a client stream is opened (:class:`OpenUpload`), fed one message at
a time (:class:`Send`) and closed for its response (:class:`CloseUpload`); a server stream is opened
(:class:`OpenStream`) and read one message at a time (:class:`Receive`). An operation that produces a
sequence (a job's events) hands each item to the caller with :class:`Emit`. The clients cancel any
stream an operation left open when it ends, however it ends. The fine-tuning operations are in
:mod:`client.finetune`.

Large calls are split into requests that respect the server's ``max_images_per_request`` and
``max_receive_message_bytes`` (from ``GetServerInfo``, asked once per client). The first request
goes to the version the caller asked for (default, label or number); the others are pinned to the
version that answered it, so every image of a call is answered by the same version. If that version
is unloaded mid-call (a new one was deployed), the call starts over once, on the version then served.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from api_types.results import ClassifyResult, FeaturesResult, ModelStatus, ServerInfo
from client import convert
from client.errors import DeadlineExceeded, ImageServeError, InvalidImage, ModelNotFound, Unavailable
from client.images import Images, as_image_list, iter_encoded
from client.options import RetryPolicy
from protos.imageserve.v1 import image_service_pb2 as pb

log = logging.getLogger("client")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Call:
    """Make one attempt of the RPC ``method`` (a stub attribute) with this timeout, in seconds."""

    method: str
    request: Message
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Pause before a retry."""

    seconds: float


@dataclass(frozen=True)
class OpenUpload:
    """Start the client-streaming RPC ``method``; the response is the call, to :class:`Send` to."""

    method: str
    timeout: float


@dataclass(frozen=True)
class Send:
    """Send one message on an upload opened by :class:`OpenUpload`."""

    call: Any
    message: Message


@dataclass(frozen=True)
class CloseUpload:
    """Say the upload is complete; the response is the RPC's response."""

    call: Any


@dataclass(frozen=True)
class OpenStream:
    """Start the server-streaming RPC ``method``; the response is the stream, to :class:`Receive` from."""

    method: str
    request: Message
    timeout: float


@dataclass(frozen=True)
class Receive:
    """The next message of a stream opened by :class:`OpenStream`; None once the stream has ended."""

    stream: Any


@dataclass(frozen=True)
class Emit:
    """Hand ``value`` to the caller iterating the operation; the operation resumes with None."""

    value: Any


Effect = Call | Sleep | OpenUpload | Send | CloseUpload | OpenStream | Receive | Emit
Operation = Generator[Effect, Any, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """The operation finished with ``value``."""

    value: T


def advance(
    operation: Operation[T], response: Any = None, error: ImageServeError | None = None
) -> Effect | Done[T]:
    """Resume ``operation`` with a call's response (or its error); the next effect, or Done."""
    try:
        if error is not None:
            return operation.throw(error)
        return operation.send(response)
    except StopIteration as stop:
        return Done(stop.value)


class Deadline:
    """The end of one client call, over all its requests and retries."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self._end = self.started + timeout

    @classmethod
    def unbounded(cls) -> Deadline:
        """A deadline that never passes (waiting for a job with no timeout)."""
        return cls(math.inf)

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def capped(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, or this one if it is sooner (one call within a long wait)."""
        return Deadline(min(seconds, max(self.remaining(), 0.0)))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def split(
    encoded: Iterator[bytes], max_images: int, max_request_bytes: int
) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive chunks ``(index of the first image, images)``, each within both limits."""
    budget = max_request_bytes - convert.REQUEST_OVERHEAD_BYTES
    start, size = 0, 0
    chunk: list[bytes] = []
    for index, data in enumerate(encoded):
        cost = convert.image_bytes_in_request(data)
        if cost > budget:
            raise InvalidImage.at(
                index,
                f"{len(data):,} bytes encoded; the server accepts requests of at most "
                f"{max_request_bytes:,} bytes: downscale the image or encode it as JPEG",
                note="refused by the client, not sent",
            )
        if chunk and (len(chunk) >= max_images or size + cost > budget):
            yield start, chunk
            start, chunk, size = index, [], 0
        chunk.append(data)
        size += cost
    if chunk:
        yield start, chunk


class _VersionGone(Exception):
    """The version that answered the first chunks was unloaded before the later ones."""

    def __init__(self, error: ModelNotFound) -> None:
        super().__init__(str(error))
        self.error = error


BuildRequest = Callable[[pb.ModelSpec, Sequence[bytes]], Message]


class Operations:
    """The client's operations, sharing a retry policy, a default timeout and cached server limits.

    Safe to share between threads: the only state is the cached :class:`ServerInfo`, replaced whole.
    """

    def __init__(self, timeout: float, retry: RetryPolicy, rng: random.Random | None = None) -> None:
        self.timeout = timeout
        self.retry = retry
        self._rng = rng or random.Random()
        self._server_info: ServerInfo | None = None

    # --- public operations -------------------------------------------------------------------------

    def classify(
        self,
        images: Images,
        model: str,
        version: int | None,
        label: str | None,
        top_k: int,
        timeout: float | None,
    ) -> Operation[ClassifyResult]:
        # Arguments are checked now, before the first request, not when the generator first runs.
        items, spec = as_image_list(images), convert.model_spec(model, version, label)

        def build(request_spec: pb.ModelSpec, chunk: Sequence[bytes]) -> Message:
            return convert.classify_request(request_spec, chunk, top_k)

        return self._chunked("Classify", items, spec, build, convert.classify_result, timeout)

    def extract_features(
        self, images: Images, model: str, version: int | None, label: str | None, timeout: float | None
    ) -> Operation[FeaturesResult]:
        items, spec = as_image_list(images), convert.model_spec(model, version, label)
        return self._chunked(
            "ExtractFeatures", items, spec, convert.features_request, convert.features_result, timeout
        )

    def list_models(self, timeout: float | None) -> Operation[list[ModelStatus]]:
        return self.single("ListModels", pb.ListModelsRequest(), convert.model_list, timeout)

    def model_status(self, name: str, timeout: float | None) -> Operation[ModelStatus]:
        return self.single(
            "GetModelStatus", pb.GetModelStatusRequest(name=name), convert.model_status, timeout
        )

    def server_info(self, timeout: float | None) -> Operation[ServerInfo]:
        info = yield from self.single(
            "GetServerInfo", pb.GetServerInfoRequest(), convert.server_info, timeout
        )
        self._server_info = info
        return info

    # --- building blocks (also used by client.finetune) -------------------------------------------

    def deadline(self, timeout: float | None) -> Deadline:
        """The deadline of a call given ``timeout`` seconds (None: the client's timeout)."""
        return Deadline(self.timeout if timeout is None else timeout)

    def single(
        self, method: str, request: Message, parse: Callable[[Any], R], timeout: float | None
    ) -> Operation[R]:
        """One unary RPC, its response parsed by ``parse``."""
        response = yield from self.unary(method, request, self.deadline(timeout))
        return parse(response)

    def unary(self, method: str, request: Message, deadline: Deadline) -> Operation[Any]:
        """One RPC: retried on UNAVAILABLE with backoff while the deadline allows."""
        attempt = 1
        while True:
            remaining = self.time_left(method, deadline)
            try:
                return (yield Call(method, request, remaining))
            except Unavailable as error:
                yield from self.backoff(method, error, attempt, deadline)
                attempt += 1
            except DeadlineExceeded as error:
                error.note = f"the call's timeout is {deadline.timeout:g} s; pass a larger timeout"
                raise

    @staticmethod
    def time_left(method: str, deadline: Deadline) -> float:
        """Seconds left before ``deadline``; DeadlineExceeded when none are."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(
                f"{method}: the {deadline.timeout:g} s timeout ran out before the call could be made",
                note="pass a larger timeout",
            )
        return remaining

    def backoff(self, method: str, error: Unavailable, attempt: int, deadline: Deadline) -> Operation[None]:
        """Pause before retry number ``attempt`` after ``error``; re-raise it when no retry is left
        (too many attempts, or the pause would end after the deadline)."""
        delay = self.retry.delay(attempt, self._rng)
        if attempt > self.retry.retries or delay >= deadline.remaining():
            error.attempts = attempt
            if attempt > 1:
                error.note = f"gave up after {attempt} attempts in {deadline.elapsed():.1f} s"
            raise error
        log.info(
            "%s: %s; retry %d of %d in %.2f s", method, error.details, attempt, self.retry.retries, delay
        )
        yield Sleep(delay)

    def limits(self, deadline: Deadline) -> Operation[ServerInfo]:
        """The server's limits, asked once per client."""
        if self._server_info is None:
            response = yield from self.unary("GetServerInfo", pb.GetServerInfoRequest(), deadline)
            self._server_info = convert.server_info(response)
        return self._server_info

    def _chunked(
        self,
        method: str,
        items: list[Any],
        spec: pb.ModelSpec,
        build: BuildRequest,
        merge: Callable[[list[Any]], R],
        timeout: float | None,
    ) -> Operation[R]:
        deadline = self.deadline(timeout)
        info = yield from self.limits(deadline)
        try:
            responses = yield from self._send_chunks(method, items, spec, build, info, deadline)
        except _VersionGone as gone:
            log.warning("%s: %s; starting over on the version now served", method, gone.error.details)
            try:
                responses = yield from self._send_chunks(method, items, spec, build, info, deadline)
            except _VersionGone as again:
                again.error.note = "the model's version changed twice during the call; call again"
                raise again.error from None
        return merge(responses)

    def _send_chunks(
        self,
        method: str,
        items: list[Any],
        spec: pb.ModelSpec,
        build: BuildRequest,
        info: ServerInfo,
        deadline: Deadline,
    ) -> Operation[list[Any]]:
        request_spec = spec
        responses: list[Any] = []
        chunks = split(iter_encoded(items), info.max_images_per_request, info.max_receive_message_bytes)
        for start, chunk in chunks:
            try:
                response = yield from self.unary(method, build(request_spec, chunk), deadline)
            except InvalidImage as error:
                raise error.shifted(start) from None
            except ModelNotFound as error:
                if request_spec is not spec:  # pinned by us: the version that answered so far is gone
                    raise _VersionGone(error) from None
                raise
            if not responses and not convert.is_pinned(spec):
                request_spec = convert.pinned(spec, response.model.version)
            responses.append(response)
        return responses

"""The blocking client: :class:`ModelClient`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from client import operations as ops
from client.calls import ClientCalls
from client.errors import ImageServeError, error_from_rpc
from client.jobs import FineTuneJob
from client.methods import Plan, SyncAPI
from client.operations import Done, Effect, Emit, Operation, advance
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

T = TypeVar("T")

#: Upload messages made ahead of the one gRPC is sending (each holds one encoded image).
_UPLOAD_QUEUE = 4
#: How often a blocked upload checks whether its call has ended, in seconds.
_UPLOAD_POLL_S = 0.05
_END = object()


class _Upload:
    """A client-streaming call that is fed one message at a time.

    NOTE: the blocking API takes an iterator of requests and reads it in a thread of its own. The
    iterator here reads a small queue, so that the operation makes each message (reads and encodes an
    image) just before it is sent, and a failure to make one cancels the call instead of ending the
    stream as if it were complete.
    """

    def __init__(self, multicallable: Any, timeout: float, metadata: Any, wait_for_ready: bool) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_UPLOAD_QUEUE)
        self._future = multicallable.future(
            iter(self._queue.get, _END), timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready
        )

    def send(self, message: Any) -> None:
        while not self._future.done():
            try:
                self._queue.put(message, timeout=_UPLOAD_POLL_S)
                return
            except queue.Full:
                continue
        self._future.result()  # the call ended: raises its error

    def close(self) -> Any:
        self.send(_END)
        return self._future.result()

    def cancel(self) -> None:
        self._future.cancel()
        try:
            self._queue.put_nowait(_END)  # a reader blocked on the empty queue stops
        except queue.Full:
            pass  # the reader is not blocked: it sees the cancellation at its next message


class ModelClient(ClientCalls, SyncAPI):
    """A blocking client of an imageserve server; thread-safe, one channel for all calls.

    Use it as a context manager (or call :meth:`close`)::

        with ModelClient("localhost:8500", timeout=10.0) as client:
            result = client.classify(["cat.jpg", "dog.png"], model="mobilenet_v2")
            print(result.version, result[0][0].label)

    Errors are :class:`~client.errors.ImageServeError` subclasses; UNAVAILABLE is retried with
    backoff within the call's timeout. The constructor's options are those of
    :class:`~client.base.ClientBase`; the methods are those of :class:`~client.calls.ClientCalls`.
    """

    _job_handle = FineTuneJob

    def _setup(self) -> None:
        self._channel: grpc.Channel = self._new_channel(grpc)
        self._stub = pb_grpc.ImageModelServiceStub(grpc.intercept_channel(self._channel, *self._interceptors))
        self._closed = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Closing twice is harmless."""
        if not self._closed.is_set():
            self._closed.set()
            self._channel.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- the effect loop ---------------------------------------------------------------------------

    def _perform(self, effect: Effect, opened: list[Any]) -> Any:
        options: dict[str, Any] = {"metadata": self._metadata, "wait_for_ready": self.options.wait_for_ready}
        if isinstance(effect, ops.Call):
            return getattr(self._stub, effect.method)(effect.request, timeout=effect.timeout, **options)
        if isinstance(effect, ops.Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, ops.OpenUpload):
            opened.append(_Upload(getattr(self._stub, effect.method), effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, ops.Send):
            return effect.call.send(effect.message)
        if isinstance(effect, ops.CloseUpload):
            return effect.call.close()
        if isinstance(effect, ops.OpenStream):
            opened.append(
                getattr(self._stub, effect.method)(effect.request, timeout=effect.timeout, **options)
            )
            return opened[-1]
        if isinstance(effect, ops.Receive):
            return next(effect.stream, None)
        raise TypeError(f"unknown effect {effect!r}")

    def _iterate(self, operation: Operation[T]) -> Generator[Any, None, T]:
        """Perform the operation's effects, yielding what it emits; returns its value. Streams it left
        open are cancelled when it ends, however it ends (also when the caller stops iterating)."""
        if self._closed.is_set():
            raise RuntimeError(f"{self!r} is closed")
        opened: list[Any] = []
        try:
            step: Effect | Done[T] = advance(operation)
            while not isinstance(step, Done):
                response: Any = None
                error: ImageServeError | None = None
                if isinstance(step, Emit):
                    yield step.value
                else:
                    try:
                        response = self._perform(step, opened)
                    except grpc.RpcError as rpc_error:
                        error = error_from_rpc(rpc_error)
                step = advance(operation, response, error)
            return step.value
        finally:
            for call in opened:  # streams the operation left open (it failed, or the caller stopped)
                call.cancel()
            operation.close()  # its own clean-up (a progress bar) now, not when it is collected

    def _run(self, plan: Plan[T]) -> T:
        """Run the plan's operation to its value, every step in the calling thread."""
        steps = self._iterate(plan.operation)
        try:
            emitted = next(steps)
        except StopIteration as stop:
            return stop.value
        steps.close()
        raise RuntimeError(f"an operation run for its value emitted {emitted!r}")

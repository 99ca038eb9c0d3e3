"""The asyncio client: :class:`AsyncModelClient`, the methods of :class:`~client.ModelClient` as coroutines.

Both have the same methods (:mod:`client.calls`) and run the same operations
(:mod:`client.operations`); only the way calls and pauses are made differs: ``grpc.aio`` and
``asyncio.sleep`` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from client import operations as ops
from client.calls import ClientCalls
from client.errors import ImageServeError, error_from_rpc
from client.jobs import AsyncFineTuneJob
from client.methods import AsyncAPI, Plan
from client.operations import Done, Effect, Emit, Operation, advance
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncModelClient(ClientCalls, AsyncAPI):
    """An asyncio client of an imageserve server, with the methods of :class:`~client.ModelClient`.

    ::

        async with AsyncModelClient("localhost:8500") as client:
            result = await client.classify("cat.jpg", model="mobilenet_v2")

    The channel is opened on the first call, inside the running event loop; use one client per
    event loop. Reading files and PNG-encoding pixels run in a worker thread, off the event loop.
    The constructor's options are those of :class:`~client.base.ClientBase`; the methods are those
    of :class:`~client.calls.ClientCalls`, as coroutines (``fine_tune`` returns an
    :class:`~client.jobs.AsyncFineTuneJob`).

    ``watch_job`` (and a job's ``events``) is an async generator: stopping early, close it (e.g.
    ``async with contextlib.aclosing(client.watch_job(job_id)) as events``) to cancel its stream at once.
    """

    _job_handle = AsyncFineTuneJob

    def _setup(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.ImageModelServiceStub | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Closing twice is harmless."""
        self._closed = True
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    # --- the effect loop ---------------------------------------------------------------------------

    def _stub_for_this_loop(self) -> pb_grpc.ImageModelServiceStub:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._stub is None:
            # NOTE: created here, not in __init__, so that the channel belongs to the running loop.
            self._channel = self._new_channel(grpc.aio, interceptors=self._interceptors or None)
            self._stub = pb_grpc.ImageModelServiceStub(self._channel)
        return self._stub

    async def _perform(self, effect: Effect, opened: list[Any]) -> Any:
        stub = self._stub_for_this_loop()
        options: dict[str, Any] = {"metadata": self._metadata, "wait_for_ready": self.options.wait_for_ready}
        if isinstance(effect, ops.Call):
            return await getattr(stub, effect.method)(effect.request, timeout=effect.timeout, **options)
        if isinstance(effect, ops.Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, ops.OpenUpload):
            opened.append(getattr(stub, effect.method)(timeout=effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, ops.Send):
            if not effect.call.done():
                try:
                    return await effect.call.write(effect.message)
                except asyncio.InvalidStateError:
                    pass  # the call ended between the check and the write
            await effect.call  # it ended (the server refused the upload): raises its error
            return None
        if isinstance(effect, ops.CloseUpload):
            await effect.call.done_writing()
            return await effect.call
        if isinstance(effect, ops.OpenStream):
            opened.append(getattr(stub, effect.method)(effect.request, timeout=effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, ops.Receive):
            message = await effect.stream.read()
            return None if message is grpc.aio.EOF else message
        raise TypeError(f"unknown effect {effect!r}")

    async def _outcome(
        self, operation: Operation[T], effect: Effect, opened: list[Any], offload: bool = True
    ) -> Effect | Done[T]:
        """Perform ``effect`` and resume the operation with its response or error."""
        response: Any = None
        error: ImageServeError | None = None
        try:
            response = await self._perform(effect, opened)
        except grpc.RpcError as rpc_error:
            error = error_from_rpc(rpc_error)
        # The operation's own steps read files and encode pixels: run them off the event loop.
        if offload:
            return await asyncio.to_thread(advance, operation, response, error)
        return advance(operation, response, error)

    async def _run(self, plan: Plan[T]) -> T:
        """Run the plan's operation to its value; its steps run on the event loop only when the plan
        says they read no files and encode no pixels (a thread hop costs more than they do)."""
        self._stub_for_this_loop()
        operation, offload = plan.operation, plan.offload
        opened: list[Any] = []
        try:
            step: Effect | Done[T] = (
                await asyncio.to_thread(advance, operation) if offload else advance(operation)
            )
            while not isinstance(step, Done):
                if isinstance(step, Emit):
                    raise RuntimeError(f"an operation run for its value emitted {step.value!r}")
                step = await self._outcome(operation, step, opened, offload)
            return step.value
        finally:
            _end(operation, opened)

    async def _iterate(self, operation: Operation[Any]) -> AsyncIterator[Any]:
        """Perform the operation's effects, yielding what it emits; its streams are cancelled when it
        ends or the iteration is closed."""
        self._stub_for_this_loop()
        opened: list[Any] = []
        try:
            step: Effect | Done[Any] = await asyncio.to_thread(advance, operation)
            while not isinstance(step, Done):
                if isinstance(step, Emit):
                    yield step.value
                    step = await asyncio.to_thread(advance, operation)
                else:
                    step = await self._outcome(operation, step, opened)
        finally:
            _end(operation, opened)


def _end(operation: Operation[Any], opened: list[Any]) -> None:
    """Cancel the streams the operation left open (it failed, or was cancelled) and close it."""
    for call in opened:
        call.cancel()
    try:
        operation.close()  # its own clean-up (a progress bar) now, not when it is collected
    except ValueError:
        pass  # NOTE: a step still running in a worker thread (the task was cancelled): closed when collected

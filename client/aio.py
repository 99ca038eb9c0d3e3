"""The asyncio client: :class:`AsyncModelClient`, the twin of :class:`~client.ModelClient`.

Both run the same operations (:mod:`client.operations`); only the way calls and pauses are made
differs: ``grpc.aio`` and ``asyncio.sleep`` here.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, ClientBase
from client.errors import ImageServeError, error_from_rpc
from client.images import Images
from client.operations import Call, Done, Effect, Operation, advance
from client.results import ClassifyResult, FeaturesResult, ModelStatus, ServerInfo
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncModelClient(ClientBase):
    """An asyncio client of an imageserve server, with the methods of :class:`~client.ModelClient`.

    ::

        async with AsyncModelClient("localhost:8500") as client:
            result = await client.classify("cat.jpg", model="mobilenet_v2")

    The channel is opened on the first call, inside the running event loop; use one client per
    event loop. Reading files and PNG-encoding pixels run in a worker thread, off the event loop.
    The constructor's options are those of :class:`~client.base.ClientBase`.
    """

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

    # --- calls -------------------------------------------------------------------------------------

    async def classify(
        self,
        images: Images,
        model: str = DEFAULT_CLASSIFIER,
        *,
        version: int | None = None,
        label: str | None = None,
        top_k: int = 5,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """The ``top_k`` most likely classes of each image; see :meth:`ModelClient.classify`."""
        return await self._run(self._operations.classify(images, model, version, label, top_k, timeout))

    async def extract_features(
        self,
        images: Images,
        model: str = DEFAULT_FEATURE_MODEL,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> FeaturesResult:
        """A float32 feature vector per image; see :meth:`ModelClient.extract_features`."""
        return await self._run(self._operations.extract_features(images, model, version, label, timeout))

    async def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model with its versions and states; see :meth:`ModelClient.list_models`."""
        return await self._run(self._operations.list_models(timeout))

    async def model_status(self, name: str, *, timeout: float | None = None) -> ModelStatus:
        """One model's versions, labels and metadata; see :meth:`ModelClient.model_status`."""
        return await self._run(self._operations.model_status(name, timeout))

    async def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version and limits; see :meth:`ModelClient.server_info`."""
        return await self._run(self._operations.server_info(timeout))

    # --- the effect loop ---------------------------------------------------------------------------

    def _stub_for_this_loop(self) -> pb_grpc.ImageModelServiceStub:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._stub is None:
            # NOTE: created here, not in __init__, so that the channel belongs to the running loop.
            self._channel = self._new_channel(grpc.aio, interceptors=self._interceptors or None)
            self._stub = pb_grpc.ImageModelServiceStub(self._channel)
        return self._stub

    async def _perform(self, call: Call) -> Any:
        stub = self._stub_for_this_loop()
        return await getattr(stub, call.method)(
            call.request,
            timeout=call.timeout,
            metadata=self._metadata,
            wait_for_ready=self.options.wait_for_ready,
        )

    async def _run(self, operation: Operation[T]) -> T:
        self._stub_for_this_loop()
        # The operation's own steps read files and encode pixels: run them off the event loop.
        step: Effect | Done[T] = await asyncio.to_thread(advance, operation)
        while not isinstance(step, Done):
            response: Any = None
            error: ImageServeError | None = None
            if isinstance(step, Call):
                try:
                    response = await self._perform(step)
                except grpc.RpcError as rpc_error:
                    error = error_from_rpc(rpc_error)
            else:
                await asyncio.sleep(step.seconds)
            step = await asyncio.to_thread(advance, operation, response, error)
        return step.value

"""The asyncio client: :class:`AsyncModelClient`, the twin of :class:`~client.ModelClient`.

Both run the same operations (:mod:`client.operations`); only the way calls and pauses are made
differs: ``grpc.aio`` and ``asyncio.sleep`` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, ClientBase
from client.datasets import DatasetImages
from client.errors import ImageServeError, error_from_rpc
from client.finetune import DEFAULT_BASE_MODEL, DEFAULT_LIST_LIMIT, HyperparametersLike, StatesLike
from client.images import Images, reads_or_encodes
from client.jobs import AsyncFineTuneJob
from client.operations import (
    Call,
    CloseUpload,
    Done,
    Effect,
    Emit,
    OpenStream,
    OpenUpload,
    Operation,
    Receive,
    Send,
    Sleep,
    advance,
)
from client.progress import ProgressOption, job_progress
from client.results import (
    ClassifyResult,
    Dataset,
    FeaturesResult,
    JobEvent,
    JobStatus,
    ModelStatus,
    ServerInfo,
)
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

    ``watch_job`` (and a job's ``events``) is an async generator: stopping early, close it (e.g.
    ``async with contextlib.aclosing(client.watch_job(job_id)) as events``) to cancel its stream at once.
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
        operation = self._operations.classify(images, model, version, label, top_k, timeout)
        return await self._run(operation, offload=reads_or_encodes(images))

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
        operation = self._operations.extract_features(images, model, version, label, timeout)
        return await self._run(operation, offload=reads_or_encodes(images))

    async def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model with its versions and states; see :meth:`ModelClient.list_models`."""
        return await self._run(self._operations.list_models(timeout))

    async def model_status(self, name: str, *, timeout: float | None = None) -> ModelStatus:
        """One model's versions, labels and metadata; see :meth:`ModelClient.model_status`."""
        return await self._run(self._operations.model_status(name, timeout))

    async def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version and limits; see :meth:`ModelClient.server_info`."""
        return await self._run(self._operations.server_info(timeout))

    # --- fine-tuning -------------------------------------------------------------------------------

    async def upload_dataset(
        self, images: DatasetImages, name: str | None = None, *, timeout: float | None = None
    ) -> Dataset:
        """Upload labelled images as a dataset; see :meth:`ModelClient.upload_dataset`."""
        return await self._run(self._jobs.upload_dataset(images, name, timeout))

    async def fine_tune(
        self,
        dataset: Dataset | DatasetImages | None = None,
        *,
        output_model: str,
        data_dir: str | None = None,
        base_model: str = DEFAULT_BASE_MODEL,
        base_version: int | None = None,
        base_label: str | None = None,
        hyperparameters: HyperparametersLike = None,
        request_id: str | None = None,
        dataset_name: str | None = None,
        timeout: float | None = None,
    ) -> AsyncFineTuneJob:
        """Start a fine-tuning job; an :class:`~client.jobs.AsyncFineTuneJob` handle. See
        :meth:`ModelClient.fine_tune`."""
        operation = self._jobs.fine_tune(
            dataset,
            data_dir,
            output_model,
            base_model,
            base_version,
            base_label,
            hyperparameters,
            request_id,
            dataset_name,
            timeout,
        )
        return AsyncFineTuneJob(self, await self._run(operation))

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """A fine-tuning job's status; see :meth:`ModelClient.get_job`."""
        return await self._run(self._jobs.get_job(job_id, timeout))

    async def list_jobs(
        self, states: StatesLike = None, limit: int = DEFAULT_LIST_LIMIT, *, timeout: float | None = None
    ) -> list[JobStatus]:
        """Fine-tuning jobs, newest first; see :meth:`ModelClient.list_jobs`."""
        return await self._run(self._jobs.list_jobs(states, limit, timeout))

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """Cancel a QUEUED or RUNNING job; see :meth:`ModelClient.cancel_job`."""
        return await self._run(self._jobs.cancel_job(job_id, timeout))

    def watch_job(
        self, job_id: str, after_event_id: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        """A job's events, live until it ends (``async for``); see :meth:`ModelClient.watch_job`."""
        return self._iterate(self._jobs.watch_job(job_id, after_event_id, timeout))

    async def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: ProgressOption = None,
        raise_on_failure: bool = True,
    ) -> JobStatus:
        """Follow a job until it ends; its final status. See :meth:`ModelClient.wait_job`."""
        with job_progress(progress) as on_event:
            return await self._run(self._jobs.wait_job(job_id, timeout, on_event, raise_on_failure))

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
        if isinstance(effect, Call):
            return await getattr(stub, effect.method)(effect.request, timeout=effect.timeout, **options)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, OpenUpload):
            opened.append(getattr(stub, effect.method)(timeout=effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, Send):
            if not effect.call.done():
                try:
                    return await effect.call.write(effect.message)
                except asyncio.InvalidStateError:
                    pass  # the call ended between the check and the write
            await effect.call  # it ended (the server refused the upload): raises its error
            return None
        if isinstance(effect, CloseUpload):
            await effect.call.done_writing()
            return await effect.call
        if isinstance(effect, OpenStream):
            opened.append(getattr(stub, effect.method)(effect.request, timeout=effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, Receive):
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

    async def _run(self, operation: Operation[T], offload: bool = True) -> T:
        """Run ``operation`` to its value. ``offload=False`` runs its steps on the event loop: only for
        operations that read no files and encode no pixels (a thread hop costs more than they do)."""
        self._stub_for_this_loop()
        opened: list[Any] = []
        try:
            step: Effect | Done[T] = await asyncio.to_thread(advance, operation) if offload else advance(operation)
            while not isinstance(step, Done):
                if isinstance(step, Emit):
                    raise RuntimeError(f"an operation run for its value emitted {step.value!r}")
                step = await self._outcome(operation, step, opened, offload)
            return step.value
        finally:
            for call in opened:  # streams the operation left open (it failed, or was cancelled)
                call.cancel()

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
            for call in opened:
                call.cancel()

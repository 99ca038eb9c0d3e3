"""The blocking client: :class:`ModelClient`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, ClientBase
from client.datasets import DatasetImages
from client.errors import ImageServeError, error_from_rpc
from client.finetune import DEFAULT_BASE_MODEL, DEFAULT_LIST_LIMIT, HyperparametersLike, StatesLike
from client.images import Images
from client.jobs import FineTuneJob
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


class ModelClient(ClientBase):
    """A blocking client of an imageserve server; thread-safe, one channel for all calls.

    Use it as a context manager (or call :meth:`close`)::

        with ModelClient("localhost:8500", timeout=10.0) as client:
            result = client.classify(["cat.jpg", "dog.png"], model="mobilenet_v2")
            print(result.version, result[0][0].label)

    Errors are :class:`~client.errors.ImageServeError` subclasses; UNAVAILABLE is retried with
    backoff within the call's timeout. The constructor's options are those of
    :class:`~client.base.ClientBase`.
    """

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

    # --- calls -------------------------------------------------------------------------------------

    def classify(
        self,
        images: Images,
        model: str = DEFAULT_CLASSIFIER,
        *,
        version: int | None = None,
        label: str | None = None,
        top_k: int = 5,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """The ``top_k`` most likely classes of each image, best first.

        Args:
            images: one image or a list of them: file paths, encoded bytes, PIL images or uint8
                arrays (H×W, H×W×3, H×W×4; an N×H×W×C array is N images). Any number: the call is
                split into requests within the server's limits, and the results keep your order.
            model: model name on the server.
            version: an explicit version number (it must be AVAILABLE); default: the model's default.
            label: a version label such as ``"stable"`` instead of a number.
            top_k: classes per image, at most the model's number of classes.
            timeout: seconds for the whole call (default: the client's ``timeout``).

        Returns:
            A :class:`ClassifyResult`: ``result[i]`` is the list of :class:`Prediction` of image
            ``i``; ``result.version`` is the version that answered every image.

        Raises:
            ModelNotFound: unknown model, version or label (the message lists what exists).
            InvalidImage: an image the server cannot use; ``index`` is its position in ``images``.
            FailedPrecondition: the model has no classifier (features only).
            ImageServeError: any other error status (see :mod:`client.errors`).
            TypeError, ValueError: an argument of the wrong type or shape (nothing was sent).
            OSError: an image file cannot be read.
        """
        return self._run(self._operations.classify(images, model, version, label, top_k, timeout))

    def extract_features(
        self,
        images: Images,
        model: str = DEFAULT_FEATURE_MODEL,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> FeaturesResult:
        """A feature vector per image (the model's pooled last convolutional features).

        Takes the same ``images``, ``version``, ``label`` and ``timeout`` as :meth:`classify`.

        Returns:
            A :class:`FeaturesResult` whose ``features`` is a float32 array ``[N, D]`` in the order
            of ``images``, and the ``version`` that answered.

        Raises:
            The same errors as :meth:`classify` (except FailedPrecondition: every model has features).
        """
        return self._run(self._operations.extract_features(images, model, version, label, timeout))

    def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model on the server, sorted by name, with its versions and their states (without
        class labels; see :meth:`model_status`)."""
        return self._run(self._operations.list_models(timeout))

    def model_status(self, name: str, *, timeout: float | None = None) -> ModelStatus:
        """One model's versions, states, default version, version labels and metadata with labels.

        Raises:
            ModelNotFound: no such model (the message lists the models that exist).
        """
        return self._run(self._operations.model_status(name, timeout))

    def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version and limits (asked afresh; the client also caches them for splitting)."""
        return self._run(self._operations.server_info(timeout))

    # --- fine-tuning -------------------------------------------------------------------------------

    def upload_dataset(
        self, images: DatasetImages, name: str | None = None, *, timeout: float | None = None
    ) -> Dataset:
        """Upload labelled images as a dataset to fine-tune on (``UploadDataset``, one message per image).

        Args:
            images: a local directory with one sub-directory of images per class (the Keras
                ``image_dataset_from_directory`` layout; ``.jpg .jpeg .png .gif .bmp .webp``, other
                files skipped), a mapping ``{label: images}``, or an iterable of ``(label, image)``
                pairs. Images are anything :meth:`classify` takes (path, bytes, PIL, uint8 array);
                each is read and encoded just before it is sent.
            name: shown in job listings (default: the directory's name, or the server's
                ``upload of N images``).
            timeout: seconds for the whole upload (default: the client's ``timeout``); give large
                datasets more.

        Returns:
            The stored :class:`Dataset`: its id, class counts and imbalance ratio.

        Raises:
            InvalidArgument: a bad label or an image the server cannot use (the message names it
                by its index and file name); the server keeps nothing of the upload.
            ServerBusy: more images or bytes than the server's upload limits.
            PermissionDenied: the token lacks the ``finetune`` scope.
            TypeError, ValueError: an input of the wrong kind, a missing or empty directory (nothing
                was sent). OSError: an image file cannot be read (the upload is cancelled).
        """
        return self._run(self._jobs.upload_dataset(images, name, timeout))

    def fine_tune(
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
    ) -> FineTuneJob:
        """Start a fine-tuning job that publishes a new version of ``output_model``; returns at once.

        ::

            job = client.fine_tune("photos/", output_model="flowers", hyperparameters={"epochs": 20})
            final = job.wait()  # a progress bar on a terminal; FineTuneFailed if the job fails

        Args:
            dataset: the training images, one of: a :class:`Dataset` from :meth:`upload_dataset`; a
                **local** directory (``str`` or ``Path``) with one sub-directory per class, which is
                uploaded first; or images by label as :meth:`upload_dataset` takes them (uploaded first).
            output_model: the model to publish a new version of, e.g. ``"flowers"`` (not the base).
            data_dir: instead of ``dataset``: a directory on the **server**, relative to its
                ``--data-root``, in the same layout; nothing is uploaded.
            base_model: the frozen base, a served model with a feature signature (default ``vgg16``).
            base_version: a version number of the base; default: its default version.
            base_label: a version label of the base instead of a number.
            hyperparameters: :class:`Hyperparameters` (or a dict of its fields); fields left unset
                take the server's defaults.
            request_id: idempotency key: starting again with the same key (and the same parameters)
                returns the first job instead of starting another. Default: a random key, so that the
                client's own retries never start a second job. A local directory is uploaded anew on
                every call, so to retry across processes, upload once and pass the :class:`Dataset`.
            dataset_name: name of the uploaded dataset (default: the directory's name).
            timeout: seconds for the upload and the start together (default: the client's ``timeout``).

        Returns:
            A :class:`~client.jobs.FineTuneJob` handle on the QUEUED job: ``job_id``, ``status``,
            ``state``, ``refresh()``, ``wait()``, ``cancel()``, ``events()``.

        Raises:
            InvalidArgument: a bad hyperparameter, dataset (one class, too few images per class) or
                name; nothing was started. ModelNotFound: unknown base model, dataset or data_dir.
            AlreadyExists: ``request_id`` was used before with other parameters.
            FailedPrecondition: ``data_dir`` on a server without a data root, or a base without features.
            PermissionDenied: the token lacks the ``finetune`` scope.
            And those of :meth:`upload_dataset` when images are uploaded.
        """
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
        return FineTuneJob(self, self._run(operation))

    def get_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """A fine-tuning job's state, phase, versions, error, hyperparameters, metrics and artifacts.

        Raises:
            NotFound (a ModelNotFound): no such job.
        """
        return self._run(self._jobs.get_job(job_id, timeout))

    def list_jobs(
        self, states: StatesLike = None, limit: int = DEFAULT_LIST_LIMIT, *, timeout: float | None = None
    ) -> list[JobStatus]:
        """Fine-tuning jobs, newest first: at most ``limit``, only in ``states`` (a :class:`JobState`,
        a name such as ``"FAILED"``, or several) when given."""
        return self._run(self._jobs.list_jobs(states, limit, timeout))

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """Cancel a QUEUED or RUNNING job: it ends CANCELLED and publishes nothing; its status.

        Raises:
            FailedPrecondition: the job has already ended (SUCCEEDED or FAILED).
            NotFound: no such job.
        """
        return self._run(self._jobs.cancel_job(job_id, timeout))

    def watch_job(
        self, job_id: str, after_event_id: int = 0, *, timeout: float | None = None
    ) -> Iterator[JobEvent]:
        """A job's events after ``after_event_id`` (0: from the start), live until the job ends.

        A broken stream (UNAVAILABLE, the server restarting) is reopened after the last event seen,
        with the client's backoff. ``timeout`` bounds the whole watch (None: until the job ends;
        DeadlineExceeded when it passes). Stopping the iteration cancels the stream.
        """
        return self._iterate(self._jobs.watch_job(job_id, after_event_id, timeout))

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: ProgressOption = None,
        raise_on_failure: bool = True,
    ) -> JobStatus:
        """Follow a job (``WatchFineTuneJob``, resumed after a broken stream) until it ends; its final status.

        Args:
            timeout: seconds to wait; None (default): until the job ends. When it passes,
                DeadlineExceeded (the job goes on).
            progress: a tqdm progress bar on stderr (phase, progress, epoch metrics, the server's
                estimate of the time left): None (default) draws it only when stderr is a terminal;
                True, False; or a callable that receives each :class:`JobEvent` instead.
            raise_on_failure: raise FineTuneFailed (FAILED; the server's reason) or
                FineTuneCancelled (CANCELLED) instead of returning that status.
        """
        with job_progress(progress) as on_event:
            return self._run(self._jobs.wait_job(job_id, timeout, on_event, raise_on_failure))

    # --- the effect loop ---------------------------------------------------------------------------

    def _perform(self, effect: Effect, opened: list[Any]) -> Any:
        options: dict[str, Any] = {"metadata": self._metadata, "wait_for_ready": self.options.wait_for_ready}
        if isinstance(effect, Call):
            return getattr(self._stub, effect.method)(effect.request, timeout=effect.timeout, **options)
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, OpenUpload):
            opened.append(_Upload(getattr(self._stub, effect.method), effect.timeout, **options))
            return opened[-1]
        if isinstance(effect, Send):
            return effect.call.send(effect.message)
        if isinstance(effect, CloseUpload):
            return effect.call.close()
        if isinstance(effect, OpenStream):
            opened.append(
                getattr(self._stub, effect.method)(effect.request, timeout=effect.timeout, **options)
            )
            return opened[-1]
        if isinstance(effect, Receive):
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

    def _run(self, operation: Operation[T]) -> T:
        steps = self._iterate(operation)
        try:
            emitted = next(steps)
        except StopIteration as stop:
            return stop.value
        steps.close()
        raise RuntimeError(f"an operation run for its value emitted {emitted!r}")

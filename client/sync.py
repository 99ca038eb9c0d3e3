"""The blocking client: :class:`ModelClient`."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, TypeVar

import grpc

from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, ClientBase
from client.errors import ImageServeError, error_from_rpc
from client.images import Images
from client.operations import Call, Done, Effect, Operation, advance
from client.results import ClassifyResult, FeaturesResult, ModelStatus, ServerInfo
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

T = TypeVar("T")


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

    # --- the effect loop ---------------------------------------------------------------------------

    def _perform(self, call: Call) -> Any:
        return getattr(self._stub, call.method)(
            call.request,
            timeout=call.timeout,
            metadata=self._metadata,
            wait_for_ready=self.options.wait_for_ready,
        )

    def _run(self, operation: Operation[T]) -> T:
        if self._closed.is_set():
            raise RuntimeError(f"{self!r} is closed")
        step: Effect | Done[T] = advance(operation)
        while not isinstance(step, Done):
            response: Any = None
            error: ImageServeError | None = None
            if isinstance(step, Call):
                try:
                    response = self._perform(step)
                except grpc.RpcError as rpc_error:
                    error = error_from_rpc(rpc_error)
            else:
                time.sleep(step.seconds)
            step = advance(operation, response, error)
        return step.value

"""The client's methods, written once: each makes the operation (:mod:`client.operations`) of one
call, and :class:`~client.ModelClient` runs it blocking, :class:`~client.AsyncModelClient` as a
coroutine (see :mod:`client.methods`). Signatures, defaults and docstrings live here only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Self, overload

from api_types.results import (
    ClassifyResult,
    Dataset,
    FeaturesResult,
    JobEvent,
    JobStatus,
    ModelStatus,
    ServerInfo,
)
from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, DEFAULT_TOP_K, ClientBase
from client.datasets import DatasetImages
from client.finetune import DEFAULT_BASE_MODEL, DEFAULT_LIST_LIMIT, HyperparametersLike, StatesLike
from client.images import Images, reads_or_encodes
from client.jobs import AsyncFineTuneJob, FineTuneJob
from client.methods import AsyncAPI, Plan, SyncAPI, call, streaming
from client.operations import Operation
from client.progress import ProgressOption

__all__ = ["ClientCalls"]

P = ParamSpec("P")


class _starts_job(call[P, Any]):
    """:class:`~client.methods.call` typed for ``fine_tune``: each client returns its kind of job handle."""

    # NOTE: narrows call's overloads (a job handle instead of the status), which type checkers
    # call an incompatible override; it is one on purpose.
    @overload  # type: ignore[override]
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: SyncAPI, owner: type) -> Callable[P, FineTuneJob]: ...
    @overload
    def __get__(
        self, instance: AsyncAPI, owner: type
    ) -> Callable[P, Coroutine[Any, Any, AsyncFineTuneJob]]: ...
    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return super().__get__(instance, owner or type(instance))

    def _returns(self, instance: Any) -> str:
        return type(instance)._job_handle.__name__


def _handle(client: ClientCalls, started: Operation[JobStatus]) -> Operation[Any]:
    """The started job's handle, of the client's kind (FineTuneJob or AsyncFineTuneJob)."""
    status = yield from started
    return client._job_handle(client, status)


class ClientCalls(ClientBase):
    """The calls of both clients. A subclass is also :class:`~client.methods.SyncAPI` or
    :class:`~client.methods.AsyncAPI`, runs operations (``_run``, ``_iterate``) and names its
    ``_job_handle`` class."""

    #: The handle ``fine_tune`` returns: FineTuneJob or AsyncFineTuneJob.
    _job_handle: Callable[[Any, JobStatus], FineTuneJob | AsyncFineTuneJob]

    @call
    def classify(
        self,
        images: Images,
        model: str = DEFAULT_CLASSIFIER,
        *,
        version: int | None = None,
        label: str | None = None,
        top_k: int = DEFAULT_TOP_K,
        timeout: float | None = None,
    ) -> Plan[ClassifyResult]:
        """The ``top_k`` most likely classes of each image, best first.

        Args:
            images: one image or a list of them: file paths, encoded bytes, PIL images or uint8
                arrays (H×W, H×W×3, H×W×4; an N×H×W×C array is N images). Any number: the call is
                split into requests within the server's limits, and the results keep your order.
            model: model name on the server.
            version: an explicit version number (it must be AVAILABLE); default: the model's default.
            label: a version label such as ``"stable"`` instead of a number.
            top_k: classes per image; above the model's number of classes, every class.
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
        operation = self._operations.classify(images, model, version, label, top_k, timeout)
        return Plan(operation, offload=reads_or_encodes(images))

    @call
    def extract_features(
        self,
        images: Images,
        model: str = DEFAULT_FEATURE_MODEL,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> Plan[FeaturesResult]:
        """A feature vector per image (the model's pooled last convolutional features).

        Takes the same ``images``, ``version``, ``label`` and ``timeout`` as :meth:`classify`.

        Returns:
            A :class:`FeaturesResult` whose ``features`` is a float32 array ``[N, D]`` in the order
            of ``images``, and the ``version`` that answered.

        Raises:
            The same errors as :meth:`classify` (except FailedPrecondition: every model has features).
        """
        operation = self._operations.extract_features(images, model, version, label, timeout)
        return Plan(operation, offload=reads_or_encodes(images))

    @call
    def list_models(self, *, timeout: float | None = None) -> Operation[list[ModelStatus]]:
        """Every model on the server, sorted by name, with its versions and their states (without
        class labels; see :meth:`model_status`)."""
        return self._operations.list_models(timeout)

    @call
    def model_status(self, name: str, *, timeout: float | None = None) -> Operation[ModelStatus]:
        """One model's versions, states, default version, version labels and metadata with labels.

        Raises:
            ModelNotFound: no such model (the message lists the models that exist).
        """
        return self._operations.model_status(name, timeout)

    @call
    def server_info(self, *, timeout: float | None = None) -> Operation[ServerInfo]:
        """The server's version and limits (asked afresh; the client also caches them for splitting)."""
        return self._operations.server_info(timeout)

    # --- fine-tuning -------------------------------------------------------------------------------

    @call
    def upload_dataset(
        self, images: DatasetImages, name: str | None = None, *, timeout: float | None = None
    ) -> Operation[Dataset]:
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
        return self._jobs.upload_dataset(images, name, timeout)

    @_starts_job
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
    ) -> Operation[Any]:
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
        return _handle(self, operation)

    @call
    def get_job(self, job_id: str, *, timeout: float | None = None) -> Operation[JobStatus]:
        """A fine-tuning job's state, phase, versions, error, hyperparameters, metrics and artifacts.

        Raises:
            NotFound (a ModelNotFound): no such job.
        """
        return self._jobs.get_job(job_id, timeout)

    @call
    def list_jobs(
        self, states: StatesLike = None, limit: int = DEFAULT_LIST_LIMIT, *, timeout: float | None = None
    ) -> Operation[list[JobStatus]]:
        """Fine-tuning jobs, newest first: at most ``limit``, only in ``states`` (a :class:`JobState`,
        a name such as ``"FAILED"``, or several) when given."""
        return self._jobs.list_jobs(states, limit, timeout)

    @call
    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Operation[JobStatus]:
        """Cancel a QUEUED or RUNNING job: it ends CANCELLED and publishes nothing; its status.

        Raises:
            FailedPrecondition: the job has already ended (SUCCEEDED or FAILED).
            NotFound: no such job.
        """
        return self._jobs.cancel_job(job_id, timeout)

    @streaming(JobEvent)
    def watch_job(
        self, job_id: str, after_event_id: int = 0, *, timeout: float | None = None
    ) -> Operation[JobEvent | None]:
        """A job's events after ``after_event_id`` (0: from the start), live until the job ends.

        A broken stream (UNAVAILABLE, the server restarting) is reopened after the last event seen,
        with the client's backoff. ``timeout`` bounds the whole watch (None: until the job ends;
        DeadlineExceeded when it passes). Stopping the iteration cancels the stream.
        """
        return self._jobs.watch_job(job_id, after_event_id, timeout)

    @call
    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: ProgressOption = None,
        raise_on_failure: bool = True,
    ) -> Operation[JobStatus]:
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
        return self._jobs.wait_job_with_progress(job_id, timeout, progress, raise_on_failure)

"""gRPC status codes as a small exception hierarchy, mapped in one table.

Every error the server answers with becomes an :class:`ImageServeError` subclass that carries the
status ``code`` and the server's message (``details``), so callers catch what they can act on::

    try:
        result = client.classify("cat.jpg", model="vgg16")
    except ModelNotFound as error:   # the message lists the models that exist
        ...
    except InvalidImage as error:    # error.index is the position in *your* list of images
        ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

if TYPE_CHECKING:
    from api_types.results import JobStatus

__all__ = [
    "ImageServeError",
    "InvalidArgument",
    "InvalidImage",
    "NotFound",
    "ModelNotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "ServerBusy",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "Unauthenticated",
    "PermissionDenied",
    "Unimplemented",
    "InternalServerError",
    "FineTuneFailed",
    "FineTuneCancelled",
    "error_from_status",
    "error_from_rpc",
]

#: Trailing metadata key under which the server names each call (also in its log lines).
REQUEST_ID_KEY = "x-request-id"
#: A bad image is named in the status details (``google.rpc.BadRequest``) by this field.
_IMAGE_FIELD = re.compile(r"images\[(\d+)\]")
#: Servers older than the status details name it only in the message: "image 3: not an image; ...".
_IMAGE_INDEX = re.compile(r"^image (\d+): ")


class ImageServeError(Exception):
    """Base of every error a call can raise; ``code`` is the gRPC status, ``details`` its message.

    ``str(error)`` is the message, followed by a note from the client when it has one (e.g. how
    many attempts it made before giving up).
    """

    #: The status code this class stands for (instances carry the code actually received).
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: The server's id of the failed call (its ``x-request-id`` trailer), to find it in the server log.
    request_id: str | None = None

    def __init__(self, details: str, code: grpc.StatusCode | None = None, note: str = "") -> None:
        super().__init__(details)
        self.details = details
        self.code = code if code is not None else self.default_code
        self.note = note

    def __str__(self) -> str:
        return f"{self.details} ({self.note})" if self.note else self.details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, details={self.details!r})"


class InvalidArgument(ImageServeError):
    """INVALID_ARGUMENT: a parameter is wrong (``top_k``, a model name, too many images); fix the call."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidImage(InvalidArgument):
    """INVALID_ARGUMENT naming one image: ``index`` is its position in the list passed to the client
    (not in the chunk the server saw), ``reason`` what is wrong with it.

    The server sends both as data (a ``google.rpc.BadRequest`` field violation on ``images[<index>]``
    in the status details); the message, ``image <index>: <reason>``, says the same to a person.
    """

    def __init__(
        self,
        details: str,
        code: grpc.StatusCode | None = None,
        note: str = "",
        *,
        index: int | None = None,
        reason: str | None = None,
    ) -> None:
        if index is None or reason is None:  # from the message alone (a server without status details)
            match = _IMAGE_INDEX.match(details)
            if match is None:
                raise ValueError(f"an InvalidImage message starts with 'image <index>: ', got {details!r}")
            index, reason = int(match.group(1)), details[match.end() :]
        super().__init__(details, code, note)
        self.index = index
        self.reason = reason

    @classmethod
    def at(cls, index: int, reason: str, code: grpc.StatusCode | None = None, note: str = "") -> InvalidImage:
        """The error of image ``index``, worded as the server words it."""
        return cls(f"image {index}: {reason}", code, note, index=index, reason=reason)

    def shifted(self, offset: int) -> InvalidImage:
        """The same error with ``index`` (and the message) moved by ``offset`` images."""
        if offset == 0:
            return self
        shifted = InvalidImage.at(self.index + offset, self.reason, self.code, self.note)
        shifted.request_id = self.request_id
        return shifted


class NotFound(ImageServeError):
    """NOT_FOUND: something named in the call does not exist; the message lists what does."""

    default_code = grpc.StatusCode.NOT_FOUND


class ModelNotFound(NotFound):
    """NOT_FOUND: unknown model, version or version label (or a version being unloaded)."""


class AlreadyExists(ImageServeError):
    """ALREADY_EXISTS: the thing to create exists already."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ImageServeError):
    """FAILED_PRECONDITION: valid call, wrong target, e.g. ``classify`` on a features-only model."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class ServerBusy(ImageServeError):
    """RESOURCE_EXHAUSTED: the model's queue is full (back off, then retry), or a message was larger
    than the server accepts. Not retried automatically."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ImageServeError):
    """UNAVAILABLE: the server is unreachable, shutting down, or the model is still loading.

    The only error the client retries (with backoff, within the call's timeout); ``attempts`` is how
    many calls were made before giving up.
    """

    default_code = grpc.StatusCode.UNAVAILABLE
    attempts: int = 1


class DeadlineExceeded(ImageServeError):
    """DEADLINE_EXCEEDED: no answer within the call's timeout; pass a larger ``timeout``."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ImageServeError):
    """CANCELLED: the call was cancelled (by the caller, or the server shut down mid-call)."""

    default_code = grpc.StatusCode.CANCELLED


class Unauthenticated(ImageServeError):
    """UNAUTHENTICATED: the server needs a token (``token=``) and got none or an unknown one."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ImageServeError):
    """PERMISSION_DENIED: the token is valid but lacks the scope this call needs."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(ImageServeError):
    """UNIMPLEMENTED: the server does not offer this call (e.g. fine-tuning is not enabled)."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class InternalServerError(ImageServeError):
    """INTERNAL (or UNKNOWN, DATA_LOSS): a server bug; the message holds an incident id for its log."""

    default_code = grpc.StatusCode.INTERNAL


class FineTuneFailed(ImageServeError):
    """A fine-tuning job that was waited for ended FAILED; ``job`` is its final
    :class:`~api_types.results.JobStatus` (metrics included when it failed at the accuracy gate).

    Not an RPC status: every call succeeded, the job did not. The message is the server's reason,
    e.g. ``validation accuracy 0.41 is below min_val_accuracy 0.9; nothing was published ...``.
    ``code`` is ABORTED. Pass ``raise_on_failure=False`` to ``wait`` to get the status instead.
    """

    default_code = grpc.StatusCode.ABORTED

    def __init__(self, job: JobStatus) -> None:
        reason = job.error or "nothing was published"
        super().__init__(f"fine-tuning job {job.job_id} {job.state.name}: {reason}")
        self.job = job


class FineTuneCancelled(FineTuneFailed):
    """A fine-tuning job that was waited for ended CANCELLED (a client cancelled it); nothing published."""


#: The one table: gRPC status code -> exception class. Codes not listed raise ImageServeError.
ERRORS_BY_CODE: dict[grpc.StatusCode, type[ImageServeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusy,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: InternalServerError,
    grpc.StatusCode.UNKNOWN: InternalServerError,
    grpc.StatusCode.DATA_LOSS: InternalServerError,
}


def error_from_status(
    code: grpc.StatusCode, details: str, violations: Iterable[tuple[str, str]] = ()
) -> ImageServeError:
    """The exception for a status code, its message and the ``(field, description)`` of its
    ``BadRequest`` details: INVALID_ARGUMENT on ``images[<index>]`` is :class:`InvalidImage`."""
    cls = ERRORS_BY_CODE.get(code, ImageServeError)
    if cls is InvalidArgument:
        for field, description in violations:
            if match := _IMAGE_FIELD.fullmatch(field):
                return InvalidImage(details, code, index=int(match.group(1)), reason=description)
        if _IMAGE_INDEX.match(details):
            return InvalidImage(details, code)
    return cls(details, code)


def _field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The ``BadRequest`` field violations in the call's status details (none if it has none)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that contradict the status code or message: not to be trusted
        return []
    violations: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [(v.field, v.description) for v in bad_request.field_violations]
    return violations


def error_from_rpc(error: grpc.RpcError) -> ImageServeError:
    """The exception for a failed gRPC call (sync or ``grpc.aio``)."""
    # Both grpc's sync errors and grpc.aio.AioRpcError have code(), details() and trailing_metadata().
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    trailers = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None
    violations = _field_violations(error) if code == grpc.StatusCode.INVALID_ARGUMENT and trailers else []
    mapped = error_from_status(code or grpc.StatusCode.UNKNOWN, details or str(error), violations)
    mapped.request_id = next((value for key, value in trailers or () if key == REQUEST_ID_KEY), None)
    return mapped

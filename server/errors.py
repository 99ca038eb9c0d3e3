"""Errors the serving core raises; each class names its gRPC status code in ``code``.

The core never imports gRPC; one decorator in the API layer (:mod:`server.api.errors`) turns these
into status codes with the message unchanged. Messages say what to do and never contain server
paths or stack traces.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error a client should see with its own message."""

    code = "INTERNAL"


class InvalidRequest(ServingError):
    """A parameter is missing or out of range (``top_k``, too many images, a malformed name)."""

    code = "INVALID_ARGUMENT"


class InvalidImage(InvalidRequest):
    """One image of a request cannot be used; ``index`` is its position in the request."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index}: {reason}")
        self.index = index
        self.reason = reason


class NotFound(ServingError):
    """An unknown model, version, version label, job or dataset; the message lists what exists."""

    code = "NOT_FOUND"


class Unavailable(ServingError):
    """Exists but cannot answer yet (still loading) or any more (shutting down). Retry later."""

    code = "UNAVAILABLE"


class QueueFull(ServingError):
    """The model's request queue is full; the client should back off and retry."""

    code = "RESOURCE_EXHAUSTED"


class LimitExceeded(ServingError):
    """A dataset is larger than the server accepts (``max_upload_bytes``, ``max_upload_images``)."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExpired(ServingError):
    """The request's deadline passed while it waited in the queue; it was dropped unrun."""

    code = "DEADLINE_EXCEEDED"


class FailedPrecondition(ServingError):
    """The request is valid but the target is in the wrong state (e.g. a model without a classifier)."""

    code = "FAILED_PRECONDITION"


class AlreadyExists(ServingError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ServingError):
    """A valid token without the scope the method needs (:mod:`server.auth`)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(ServingError):
    """No token, or one the server does not know (:mod:`server.auth`)."""

    code = "UNAUTHENTICATED"


class FineTuningDisabled(ServingError):
    """A fine-tuning call on a server started without fine-tuning."""

    code = "UNIMPLEMENTED"

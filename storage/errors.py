"""Errors of the storage layer; each message says what went wrong and what to do, without a traceback.

Callers map them to their own terms: the exporter's CLI to exit codes, the server to gRPC status codes
or a version's FAILED reason.
"""

from __future__ import annotations


class StorageError(Exception):
    """A model root or a dataset store cannot be used as asked."""


class UnsupportedRoot(StorageError):
    """The root's URL scheme is unknown here, or its library is not installed (the message names it)."""


class RootUnavailable(StorageError):
    """The model root cannot be listed now (an object store down or stalled, a bucket or directory
    gone): a reader keeps what it has and lists it again later."""


class VersionExists(StorageError):
    """The version number is taken; versions are immutable."""


class PublishFailed(StorageError):
    """Writing or uploading a version failed (disk full, permission denied, no such bucket, ...);
    nothing was published."""


class DownloadFailed(StorageError):
    """A published version could not be copied from the bucket intact; it is retried when it changes."""

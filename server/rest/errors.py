"""The REST counterpart of :mod:`server.api.errors`: a core error's code becomes an HTTP status, and
every error is ``{"error": "<message>"}`` (the body both TF Serving's REST API and the Open
Inference Protocol define). Unexpected exceptions are logged with an incident id and answered 500."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from server.errors import ServingError

log = logging.getLogger(__name__)

#: gRPC code name (``ServingError.code``) -> HTTP status; one table, as for gRPC.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
#: HTTP status of aiohttp's own refusals (bad path, body too large) -> code name for metrics.
_CODE_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def serving_error_response(exc: ServingError) -> web.Response:
    """The code's status, or the error's own ``http_status`` where HTTP has a closer one (408, 415)."""
    return error_response(getattr(exc, "http_status", None) or HTTP_STATUS.get(exc.code, 500), str(exc))


def internal_error_response(exc: BaseException, what: str) -> web.Response:
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", what, incident, exc_info=exc)
    return error_response(500, f"internal server error (incident {incident}); details are in the server log")


def code_of_http(status: int) -> str:
    if status < 400:
        return "OK"
    return _CODE_OF_HTTP.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")

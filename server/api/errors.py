"""The one place where exceptions become gRPC status codes.

:func:`grpc_method` wraps every servicer method: a :class:`~server.errors.ServingError` becomes its
``code`` with its message unchanged; anything else is a server bug, logged with its traceback under
an incident id and answered with a generic ``INTERNAL`` that names only that id.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import uuid
from typing import Any, AsyncIterator, Callable

import grpc
from google.protobuf.message import DecodeError

from server.errors import InvalidRequest, ServingError

log = logging.getLogger(__name__)


class MalformedRequest:
    """Stands in for a request whose bytes are not a valid protobuf (e.g. a string that is not
    UTF-8), so that the client gets INVALID_ARGUMENT instead of gRPC's own INTERNAL."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def safe_deserializer(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc) or "cannot parse the request message")

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, MalformedRequest):
        raise InvalidRequest(f"malformed request: {request.reason} (strings must be valid UTF-8)")
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, ServingError):
        log.debug("%s -> %s: %s", method, exc.code, exc)
        await context.abort(grpc.StatusCode[exc.code], str(exc))
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", method, incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}); details are in the server log")


def grpc_method(method: Callable) -> Callable:
    """Apply the error mapping to a unary or streaming servicer method."""
    name = method.__name__
    streaming_request = "request_iterator" in inspect.signature(method).parameters

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self, request, context):
            try:
                async for response in method(self, _checked(request), context):
                    yield response
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort(context, exc, name)

        return streaming

    @functools.wraps(method)
    async def unary(self, request, context):
        try:
            request = _checked_stream(request) if streaming_request else _checked(request)
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc, name)

    return unary

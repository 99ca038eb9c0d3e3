"""The one place where a call ends: exceptions become gRPC status codes, and every call is observed.

:func:`grpc_method` wraps every servicer method:

- a :class:`~server.errors.ServingError` becomes its ``code`` with its message unchanged (a bad
  image also carries its index and reason as a ``google.rpc.BadRequest`` in the status details,
  the ``grpc-status-details-bin`` trailer, for clients to read as data); anything
  else is a server bug, logged with its traceback under an incident id and answered with a generic
  ``INTERNAL`` that names only that id;
- a request id is taken from the caller's ``x-request-id`` metadata (or made up), put on every log
  line of the call and echoed back in the trailing metadata;
- the servicer's ``observe_call(rpc, request, response, code, seconds)`` (metrics, debug log) runs
  once per call, whatever its outcome;
- with tracing on (:mod:`server.tracing`), unary calls run in a server span named
  ``<service>/<method>``, child of the caller's ``traceparent`` metadata.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server import tracing
from server.errors import InvalidImage, InvalidRequest, ServingError
from server.logs import request_id

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"


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


def _incoming_request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return value
    return uuid.uuid4().hex[:16]


def _status_of(exc: BaseException) -> str:
    return exc.code if isinstance(exc, ServingError) else "INTERNAL"


def _details_trailer(exc: ServingError, code: grpc.StatusCode) -> tuple[tuple[str, bytes], ...]:
    """The ``grpc-status-details-bin`` trailer of errors that name a field of the request (none else)."""
    if not isinstance(exc, InvalidImage):
        return ()
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=f"images[{exc.index}]", description=exc.reason
    )
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return tuple(rpc_status.to_status(status).trailing_metadata)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str, rid: str) -> None:
    trailer = ((REQUEST_ID_KEY, rid),)
    if isinstance(exc, ServingError):
        log.debug("%s -> %s: %s", method, exc.code, exc)
        code = grpc.StatusCode[exc.code]
        await context.abort(code, str(exc), trailing_metadata=trailer + _details_trailer(exc, code))
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", method, incident, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal server error (incident {incident}); details are in the server log",
        trailing_metadata=trailer,
    )


class _Call:
    """Bookkeeping of one call: request id, start time, outcome."""

    def __init__(self, servicer: Any, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.servicer, self.rpc, self.request, self.context = servicer, rpc, request, context
        self.rid = _incoming_request_id(context)
        self.code = "OK"
        self.response: Any = None
        self.started = time.monotonic()
        self._finished = False
        # NOTE: never reset: each RPC runs in its own task, so the value dies with the call's context,
        # and a streaming call's generator may be closed from another context (reset would raise).
        request_id.set(self.rid)
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.rid),))

    async def end_with(self, exc: BaseException) -> None:
        """The call raised ``exc``: re-raise what gRPC must see (an abort already sent, the caller gone),
        else record the status and abort with it (see :func:`_abort`)."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # the caller went away
            self.code = "CANCELLED"
            raise exc
        self.code = _status_of(exc)
        self.finish()  # before the status goes out (see finish)
        await _abort(self.context, exc, self.rpc, self.rid)

    def finish(self) -> None:
        """Record the call, once (metrics, debug log).

        NOTE: a failing call records itself before the abort: grpc.aio sends the status inside
        abort(), so a client that sees the error and then scrapes /metrics must find it counted.
        """
        if self._finished:
            return
        self._finished = True
        observe = getattr(self.servicer, "observe_call", None)
        if observe is not None:
            observe(self.rpc, self.request, self.response, self.code, time.monotonic() - self.started)


def _span_of(servicer: Any, method: str, context: grpc.aio.ServicerContext) -> tuple:
    """A call's span: its name, the caller's headers (for ``traceparent``) and its attributes."""
    service = getattr(servicer, "rpc_service", type(servicer).__name__)
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return f"{service}/{method}", lambda: dict(context.invocation_metadata() or ()), attributes


def grpc_method(method: Callable) -> Callable:
    """Apply the error mapping, request ids and call observation to a unary or streaming method."""
    name = method.__name__
    streaming_request = "request_iterator" in inspect.signature(method).parameters

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self, request, context):
            span = tracing.start_stream_span(*_span_of(self, name, context))
            call = _Call(self, name, request, context)
            try:
                async for response in method(self, _checked(request), context):
                    yield response
            except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
                await call.end_with(exc)
            finally:
                call.finish()
                tracing.end_span(span, call.code, request_id=call.rid)

        return streaming

    @functools.wraps(method)
    async def unary(self, request, context):
        with tracing.server_span(*_span_of(self, name, context)) as span:
            call = _Call(self, name, request, context)
            try:
                checked = _checked_stream(request) if streaming_request else _checked(request)
                call.response = await method(self, checked, context)
                return call.response
            except (Exception, asyncio.CancelledError) as exc:
                await call.end_with(exc)
            finally:
                call.finish()
                tracing.set_outcome(span, call.code, request_id=call.rid)

    return unary

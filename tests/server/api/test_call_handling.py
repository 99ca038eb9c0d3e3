"""The one call decorator (server/api/errors.py) on its own: status mapping, request ids, and a
streaming call closed from another task (a client cancelling a watch mid-stream)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from server.api.errors import REQUEST_ID_KEY, grpc_method
from server.errors import NotFound
from server.logs import request_id


class FakeContext:
    def __init__(self, metadata=()) -> None:
        self.metadata = metadata
        self.trailers = ()
        self.aborted: tuple | None = None

    def invocation_metadata(self):
        return self.metadata

    def set_trailing_metadata(self, trailers) -> None:
        self.trailers = trailers

    async def abort(self, code, details, trailing_metadata=()):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class Servicer:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def observe_call(self, rpc, request, response, code, seconds) -> None:
        self.calls.append((rpc, code))

    @grpc_method
    async def Unary(self, request, context):
        if request == "missing":
            raise NotFound("unknown thing 'missing'; things: a, b")
        if request == "bug":
            raise KeyError("/srv/secret/path")
        return f"{request} as {request_id.get()}"

    @grpc_method
    async def Stream(self, request, context):
        for i in range(100):
            yield i


def test_errors_become_status_codes_and_bugs_stay_generic():
    servicer = Servicer()

    async def scenario():
        ok = await servicer.Unary("hello", FakeContext(((REQUEST_ID_KEY, "order-7"),)))
        missing, bug = FakeContext(), FakeContext()
        for request, context in (("missing", missing), ("bug", bug)):
            with pytest.raises(grpc.aio.AbortError):
                await servicer.Unary(request, context)
        return ok, missing, bug

    ok, missing, bug = asyncio.run(scenario())
    assert ok == "hello as order-7"
    assert missing.aborted == (grpc.StatusCode.NOT_FOUND, "unknown thing 'missing'; things: a, b")
    assert bug.aborted[0] == grpc.StatusCode.INTERNAL and "secret" not in bug.aborted[1]
    assert servicer.calls == [("Unary", "OK"), ("Unary", "NOT_FOUND"), ("Unary", "INTERNAL")]


def test_a_stream_closed_from_another_task_ends_cleanly():
    servicer = Servicer()
    context = FakeContext()

    async def scenario():
        stream = servicer.Stream("watch", context)
        assert [await stream.__anext__() for _ in range(3)] == [0, 1, 2]
        # The client cancels: gRPC closes the generator from another task (another context).
        await asyncio.get_running_loop().create_task(stream.aclose())

    asyncio.run(scenario())
    assert servicer.calls == [("Stream", "CANCELLED")]
    assert dict(context.trailers)[REQUEST_ID_KEY]

"""Request bodies turned into values without stalling the server's event loop.

``json.loads`` builds every object of a document in one C call that holds the GIL throughout: on the
event loop or in a thread alike, a 47 MiB body of 10 M small strings stalled every door of the server,
gRPC health included, for 5.9 s (issue 28). So:

- a body of at most :data:`INLINE_BYTES` (a few milliseconds of parsing) is parsed on the event loop;
- a larger one goes to the parser process (one, spawned on first use, replaced if it dies), which
  parses it, checks it and converts its tensors to NumPy arrays: the server's process receives a few
  arrays, never millions of objects. At most :data:`MAX_WAITING` large bodies wait for it; beyond,
  the request is refused with RESOURCE_EXHAUSTED (HTTP 429), to be retried.

A parse function is a plain picklable function ``(body, *arguments) -> value`` (``server.rest.v2_request``,
``server.rest.tfserving_request``) importing nothing heavier than NumPy. The JSON helpers below keep
their recursion bounded: nesting deeper than Python's parser allows, or deeper than a tensor can be,
is an invalid request, not a RecursionError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from aiohttp import web

from server.api.tensors import MAX_DIMENSIONS
from server.errors import InvalidRequest, QueueFull, ServingError, Unavailable

log = logging.getLogger(__name__)

#: Bodies up to this size are parsed on the event loop (a 256 KiB JSON document of the smallest
#: values, ~100,000 of them, parses in about 10 ms).
INLINE_BYTES = 256 * 1024
#: Large bodies waiting for the parser process at once; more are refused (429, retry).
MAX_WAITING = 4
#: A nested list of pixels is [N, H, W, 3]; a value nested deeper than a tensor can be is refused.
MAX_NESTING = MAX_DIMENSIONS

T = TypeVar("T")


class RequestTimeout(ServingError):
    """The request's body did not arrive in time."""

    code = "DEADLINE_EXCEEDED"
    http_status = 408


class UnsupportedEncoding(InvalidRequest):
    """A compressed body: refused unread (a gzip body of 1 MiB can inflate to gigabytes)."""

    http_status = 415


def loads(body: bytes) -> Any:
    """A JSON document, or InvalidRequest saying why not (never RecursionError)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply to be a request") from None


def flatten(name: str, value: Any) -> list:
    """The leaves of a nested list, in order (iterative: nesting beyond MAX_NESTING is refused)."""
    leaves: list = []
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth >= MAX_NESTING:
                raise InvalidRequest(f"input {name!r}: data nested deeper than {MAX_NESTING} levels")
            stack.extend((child, depth + 1) for child in reversed(item))
        else:
            leaves.append(item)
    return leaves


def check_nesting(name: str, value: Any, limit: int = MAX_NESTING + 2) -> None:
    """Refuse lists and objects nested deeper than ``limit`` (before a recursive walk of them)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth >= limit:
                raise InvalidRequest(f"{name} is nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class BodyParser:
    """Reads request bodies (within ``body_timeout_s``; uncompressed only) and parses them inline
    when small, in the parser process when large."""

    def __init__(self, body_timeout_s: float = 60.0) -> None:
        self.body_timeout_s = body_timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._waiting = 0

    async def read(self, request: web.Request) -> bytes:
        """The body, refused if compressed (415) or slower than ``body_timeout_s`` to arrive (408)."""
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedEncoding(
                f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed "
                "(for large tensors, the binary data extension)"
            )
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await request.read()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s"
            ) from None

    async def parse(self, function: Callable[..., T], body: bytes, *arguments: Any) -> T:
        if len(body) <= INLINE_BYTES:
            return function(body, *arguments)
        if self._waiting >= MAX_WAITING:
            raise QueueFull(
                f"{self._waiting} large request bodies are being parsed; retry shortly "
                f"(bodies over {INLINE_BYTES // 1024} KiB are parsed one at a time)"
            )
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor(), function, body, *arguments
            )
        except BrokenProcessPool:
            log.error("the request body parser process died; starting a new one for the next body")
            self._pool = None
            raise Unavailable(
                "the request body could not be parsed (the parser process died); retry"
            ) from None
        finally:
            self._waiting -= 1

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # NOTE: spawned, not forked: a fork of this process would copy TensorFlow's threads' state.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

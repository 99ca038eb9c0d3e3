"""The REST port's connections, bounded on purpose: how many, and how long each may take.

aiohttp alone keeps a connection whose request headers never finish for as long as the client
likes: 20,108 half-open sockets, without a token, used every file descriptor of the process (issue
28); gRPC and REST then refused new clients. Here, with the settings of the same names:

- ``http_max_connections``: connections open at once; one more is closed as soon as it is accepted;
- ``http_header_timeout_s``: from a request's first byte to its last header line; a connection
  slower than that is closed (a client trickling headers, slowloris);
- ``http_keepalive_timeout_s``: an idle keep-alive connection is closed (aiohttp's own timer);
- ``http_body_timeout_s``: reading a request's body (:meth:`server.rest.bodies.BodyParser.read`; 408).

:class:`GuardedSite` binds the socket every door binds (:mod:`server.sockets`: ``[::]`` is dual-stack).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from aiohttp import web

log = logging.getLogger(__name__)


class Limits:
    """The counters and bounds shared by a port's connections."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: counts it, and closes it when a request's
    headers take longer than the header timeout."""

    def __init__(self, inner: asyncio.Protocol, limits: Limits) -> None:
        self.inner = inner
        self.limits = limits
        self.transport: asyncio.BaseTransport | None = None
        self._counted = False
        self._in_request = False
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol, forwarded ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.limits.open >= self.limits.max_connections:
            self.limits.refused += 1
            if self.limits.refused in (1, 10, 100) or self.limits.refused % 1000 == 0:
                log.warning(
                    "REST: %d connections open, the limit (http_max_connections); refused %d so far",
                    self.limits.open,
                    self.limits.refused,
                )
            transport.abort()
            return
        self.limits.open += 1
        self._counted = True
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._counted:
            if not self._in_request and self._timer is None:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._counted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.limits.open -= 1
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._counted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._counted:
            self.inner.resume_writing()

    # --- the request cycle (told by the middleware) ----------------------------------------------

    def request_started(self) -> None:
        self._in_request = True
        self._disarm()

    def request_finished(self) -> None:
        self._in_request = False

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self._in_request and self.transport is not None:
            self.limits.timed_out += 1
            self.transport.abort()


class GuardedSite(web.BaseSite):
    """An aiohttp site on a socket bound elsewhere, each connection wrapped in a GuardedProtocol."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self.limits = limits

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://[{host}]:{port}"

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(factory(), self.limits), sock=self._sock, ssl=self._ssl_context
        )


def track_requests():
    """Middleware: tells the connection's guard when a request's headers are in, and when it ends."""

    @web.middleware
    async def track(request: web.Request, handler):
        guard = _guard_of(request)
        if guard is not None:
            guard.request_started()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.request_finished()

    return track


def _guard_of(request: web.Request) -> GuardedProtocol | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedProtocol) else None

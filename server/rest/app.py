"""The REST server: an aiohttp application on ``rest_port``, in the gRPC server's event loop.

aiohttp serves HTTP/1.1 on asyncio itself, so REST handlers await the same core (repository,
batchers) as the gRPC servicers, with no second thread or loop. Every route goes through two
middlewares: :func:`_observe` (request id, the one error mapping, metrics) and the bearer-token
check (the same tokens and scopes as gRPC; the V2 health probes stay open, like grpc.health).
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from server import tracing
from server.auth import READ, TokenTable, bearer_token
from server.errors import ServingError
from server.logs import request_id
from server.metrics import Metrics
from server.rest.connections import GuardedSite, Limits, track_requests
from server.rest.errors import code_of_http, error_response, internal_error_response, serving_error_response
from server.settings import ServerSettings
from server.sockets import listening_socket

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
#: Paths anyone may call when tokens are configured (load balancer probes).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})

#: What a handler learned for the request's metrics: (model, version) that answered; the model asked for.
SERVED = web.RequestKey("served", tuple)
MODEL = web.RequestKey("model", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _incoming_request_id(request: web.Request) -> str:
    value = request.headers.get(REQUEST_ID_HEADER, "")
    return value if 0 < len(value) <= 128 and value.isprintable() else uuid.uuid4().hex[:16]


def ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The gRPC port's TLS set-up for HTTP: the same certificate, and client certificates when required."""
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    if settings.tls_client_ca is not None:
        context.load_verify_locations(str(settings.tls_client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the error's JSON response (the one error mapping of REST)."""
    try:
        return await handler(request)
    except ServingError as exc:
        log.debug("%s %s -> %s: %s", request.method, request.path, exc.code, exc)
        return serving_error_response(exc)
    except web.HTTPException as exc:  # aiohttp's own: no route, wrong method, body too large
        if exc.status == 404:
            message = f"no REST endpoint {request.path!r}; the paths are listed in docs/protocols.md"
        else:
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, message, allow)
    except Exception as exc:  # a bug: logged with an incident id, never shown to the caller
        return internal_error_response(exc, f"{request.method} {request.path}")


def _observe(metrics: Metrics | None, model_names: Callable[[], list[str]]):
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = _incoming_request_id(request)
        request_id.set(rid)  # each request runs in its own task: the value dies with it
        started = time.monotonic()
        route = (request.match_info.route.name or "unmatched").split(":")[0]
        with tracing.server_span(
            f"{request.method} {route}",
            lambda: request.headers,
            {"http.request.method": request.method, "url.path": request.path, "imageserve.request_id": rid},
        ) as span:
            response = await _answer(request, handler)
            tracing.set_outcome(span, code_of_http(response.status), response.status)
        response.headers[REQUEST_ID_HEADER] = rid
        served = request.get(SERVED)
        model = request.get(MODEL) or request.match_info.get("model", "-")
        name, version = served if served else (model if model in model_names() else "-", None)
        seconds = time.monotonic() - started
        code = code_of_http(response.status)
        if metrics is not None:
            metrics.record_request(f"rest.{route}", name, version, code, seconds)
        log.debug(
            "%s %s model=%s -> %d in %.1f ms",
            request.method,
            request.path,
            name,
            response.status,
            seconds * 1000,
        )
        return response

    return observe


def _authenticate(tokens: TokenTable):
    challenge = {"WWW-Authenticate": "Bearer"}

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            return error_response(
                401, "missing token: send an 'Authorization: Bearer <token>' header", challenge
            )
        scopes = tokens.scopes_of(token)
        if scopes is None:
            return error_response(401, "invalid token", challenge)
        if READ not in scopes:
            return error_response(403, f"this API needs a token with the '{READ}' scope")
        return await handler(request)

    return authenticate


class RestServer:
    """Serves ``routes`` on ``settings.rest_port`` with the server's limits, TLS and tokens."""

    def __init__(
        self,
        settings: ServerSettings,
        routes: Iterable[web.RouteDef],
        tokens: TokenTable | None,
        metrics: Metrics | None,
        model_names: Callable[[], list[str]],
    ) -> None:
        self.settings = settings
        self.limits = Limits(settings.http_max_connections, settings.http_header_timeout_s)
        middlewares = [track_requests(), _observe(metrics, model_names)]
        if tokens is not None:
            middlewares.append(_authenticate(tokens))
        # client_max_size: the gRPC max_message_bytes limit, for bodies (413 beyond it).
        self.app = web.Application(middlewares=middlewares, client_max_size=settings.max_message_bytes)
        self.app.add_routes(list(routes))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.settings.shutdown_grace_s,
            keepalive_timeout=self.settings.http_keepalive_timeout_s,
        )
        await self._runner.setup()
        try:
            sock = listening_socket(self.settings.host, self.settings.rest_port)
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                f"could not listen for REST on {self.settings.host}:{self.settings.rest_port}: {exc.strerror}"
            ) from None
        await GuardedSite(self._runner, sock, self.limits, ssl_context(self.settings)).start()
        self.port = sock.getsockname()[1]
        log.info("REST (Open Inference Protocol V2, TF Serving REST) on %s:%d", self.settings.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting; in-flight requests get up to ``shutdown_grace_s`` to finish."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

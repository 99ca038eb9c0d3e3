"""Optional transport security (TLS, mutual TLS) and bearer-token auth with scopes.

Tokens come from ``auth_tokens_file`` (one ``<token> <scope>[,<scope>...]`` per line, ``#`` comments)
and/or ``auth_tokens`` (the same entries separated by ``;``, for an environment variable). When any
token is configured, every call needs ``authorization: Bearer <token>`` metadata:

- no or unknown token -> ``UNAUTHENTICATED``;
- a token without the scope the method needs -> ``PERMISSION_DENIED``.

Scopes: ``read`` (inference, status, job status) and ``finetune`` (upload datasets, start and cancel
jobs). The health service and server reflection stay open, so load balancers and tools can probe.
Tokens are compared in constant time; only their SHA-256 digests are kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from server.errors import PermissionDenied, ServingError, Unauthenticated
from server.settings import ServerSettings, SettingsError

READ, FINETUNE = "read", "finetune"
SCOPES = (READ, FINETUNE)
MIN_TOKEN_LENGTH = 16

#: Methods that need the finetune scope; every other method of a protected service needs read.
_FINETUNE_METHODS = {
    "/imageserve.v1.ImageModelService/UploadDataset",
    "/imageserve.v1.ImageModelService/StartFineTune",
    "/imageserve.v1.ImageModelService/CancelFineTuneJob",
}
#: Services anyone may call: health probes and reflection (the API's shape is public in protos/).
_OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
#: The Open Inference Protocol's own liveness and readiness probes are as open as the health service.
_OPEN_METHODS = {"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}


def required_scope(method: str) -> str | None:
    """The scope a full method name (``/package.Service/Method``) needs; None for open services."""
    if method.startswith(_OPEN_SERVICES) or method in _OPEN_METHODS:
        return None
    return FINETUNE if method in _FINETUNE_METHODS else READ


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenTable:
    """Token digests and their scopes."""

    entries: tuple[tuple[bytes, frozenset[str]], ...]

    @classmethod
    def parse(cls, lines: Iterable[str], source: str) -> TokenTable:
        entries = []
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise SettingsError(f"{source}, entry {number}: expected '<token> <scope>[,<scope>]'")
            token, scopes = parts[0], frozenset(s for s in parts[1].split(",") if s)
            unknown = scopes - set(SCOPES)
            if unknown or not scopes:
                raise SettingsError(
                    f"{source}, entry {number}: unknown scopes {sorted(unknown)}; known: {', '.join(SCOPES)}"
                )
            if len(token) < MIN_TOKEN_LENGTH:
                raise SettingsError(
                    f"{source}, entry {number}: tokens must be at least {MIN_TOKEN_LENGTH} characters"
                )
            entries.append((_digest(token), scopes))
        return cls(tuple(entries))

    def scopes_of(self, token: str) -> frozenset[str] | None:
        digest = _digest(token)
        found = None
        for known, scopes in self.entries:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(known, digest):
                found = scopes
        return found


def load_tokens(settings: ServerSettings) -> TokenTable | None:
    """The configured tokens, or None when auth is off."""
    entries: list[tuple[bytes, frozenset[str]]] = []
    if settings.auth_tokens_file is not None:
        try:
            text = Path(settings.auth_tokens_file).read_text()
        except OSError as exc:
            raise SettingsError(f"auth_tokens_file: {exc.strerror}: {settings.auth_tokens_file}") from None
        entries += TokenTable.parse(text.splitlines(), "auth_tokens_file").entries
    if settings.auth_tokens:
        entries += TokenTable.parse(settings.auth_tokens.split(";"), "auth_tokens").entries
    return TokenTable(tuple(entries)) if entries else None


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; the scheme is case-insensitive
    (RFC 7235: ``bearer``, ``BEARER`` and ``Bearer`` are one scheme)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return bearer_token(value)
    return None


def _denying(handler: grpc.RpcMethodHandler, error: ServingError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with ``error``'s code and message.

    NOTE: the refusal happens in the interceptor, before the servicer's wrapper
    (:func:`server.api.errors.grpc_method`) exists for this call, so it maps the code here.
    """
    code, message = grpc.StatusCode[error.code], str(error)

    async def deny(request_or_iterator, context):
        await context.abort(code, message)

    async def deny_stream(request_or_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    if handler.unary_unary:
        return handler._replace(unary_unary=deny)
    if handler.unary_stream:
        return handler._replace(unary_stream=deny_stream)
    if handler.stream_unary:
        return handler._replace(stream_unary=deny)
    return handler._replace(stream_stream=deny_stream)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token and its scope before any servicer code runs."""

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        scope = required_scope(details.method)
        if handler is None or scope is None:
            return handler
        token = _bearer(details.invocation_metadata)
        if token is None:
            return _denying(
                handler, Unauthenticated("missing token: send 'authorization: Bearer <token>' metadata")
            )
        scopes = self.tokens.scopes_of(token)
        if scopes is None:
            return _denying(handler, Unauthenticated("invalid token"))
        if scope not in scopes:
            method = details.method.rsplit("/", 1)[-1]
            return _denying(handler, PermissionDenied(f"{method} needs a token with the '{scope}' scope"))
        return handler


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings (mutual TLS when ``tls_client_ca`` is set); None for plaintext."""
    if settings.tls_cert is None:
        return None

    def read(path: Path, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"{what}: {exc.strerror}: {path}") from None

    key, cert = read(settings.tls_key, "tls_key"), read(settings.tls_cert, "tls_cert")
    client_ca = read(settings.tls_client_ca, "tls_client_ca") if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )

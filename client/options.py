"""Client settings, typed and documented in one object, and the gRPC channel they describe."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ClientOptions", "RetryPolicy", "Pem", "DEFAULT_ADDRESS"]

DEFAULT_ADDRESS = "localhost:8500"

#: PEM data as bytes, PEM text, or the path of a PEM file.
Pem = bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for UNAVAILABLE only.

    Retry ``n`` (1-based) waits a random time between half and all of
    ``min(max_backoff_s, backoff_s * multiplier ** (n - 1))``. A retry that would start after the
    call's deadline is not made.
    """

    retries: int = 5
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s <= 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(
                "need 0 < backoff_s <= max_backoff_s, "
                f"got backoff_s={self.backoff_s}, max_backoff_s={self.max_backoff_s}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * self.multiplier ** (retry - 1))
        return ceiling * rng.uniform(0.5, 1.0)


def _read_pem(value: Pem | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {value}: {exc.strerror}") from None


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client can be told besides its address; the constructors' keyword arguments."""

    #: Seconds one method call may take in total: every chunk, every retry and its backoff.
    timeout: float = 10.0
    #: Backoff for retries on UNAVAILABLE (no other error is retried).
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Wait for the server to be reachable (until the timeout) instead of failing with UNAVAILABLE.
    wait_for_ready: bool = False
    #: Speak TLS; implied by any of the certificate options. Without root_certificates the system's
    #: trusted roots check the server.
    tls: bool = False
    #: PEM CA bundle (bytes, PEM text or a file path) that signed the server's certificate.
    root_certificates: Pem | None = None
    #: PEM certificate chain the client presents (mutual TLS); goes with client_key.
    client_certificate: Pem | None = None
    #: PEM private key of client_certificate.
    client_key: Pem | None = None
    #: Name to check the server's certificate against, when it differs from the address' host.
    tls_server_name: str | None = None
    #: Bearer token, sent as ``authorization: Bearer <token>`` metadata on every call.
    token: str | None = None
    #: Extra gRPC channel arguments, e.g. ``(("grpc.keepalive_time_ms", 30000),)``.
    channel_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("client_certificate and client_key go together (mutual TLS needs both)")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(
            value is not None for value in (self.root_certificates, self.client_certificate, self.client_key)
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or None for a plaintext channel."""
        if not self.uses_tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates, "root_certificates"),
            private_key=_read_pem(self.client_key, "client_key"),
            certificate_chain=_read_pem(self.client_certificate, "client_certificate"),
        )

    def grpc_options(self) -> list[tuple[str, Any]]:
        """Channel arguments: no client-side message limits (the server's limits are respected by
        splitting requests) and reconnection backoff in step with the retry policy."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # NOTE: a channel that failed to connect refuses calls until its own reconnect timer fires
            # (1 s, growing to 120 s, by default); retries faster than that would all fail unsent.
            ("grpc.initial_reconnect_backoff_ms", max(1, int(self.retry.backoff_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(self.retry.max_backoff_s * 1000))),
        ]
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return options + list(self.channel_options)

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Metadata sent with every call (the bearer token)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

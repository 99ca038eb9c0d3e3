"""What :class:`~client.ModelClient` and :class:`~client.AsyncModelClient` share: construction.

The defaults of the options are those of :class:`~client.options.ClientOptions` and
:class:`~client.options.RetryPolicy`, stated there once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from client.finetune import FineTuneOperations
from client.operations import Operations
from client.options import DEFAULT_ADDRESS, ClientOptions, Pem, RetryPolicy

DEFAULT_CLASSIFIER = "mobilenet_v2"
DEFAULT_FEATURE_MODEL = "vgg16"
#: Classes per image that ``classify`` returns when not told.
DEFAULT_TOP_K = 5


class ClientBase:
    """Options, operations and the channel settings common to both clients."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = ClientOptions.timeout,
        retries: int = RetryPolicy.retries,
        backoff_s: float = RetryPolicy.backoff_s,
        max_backoff_s: float = RetryPolicy.max_backoff_s,
        wait_for_ready: bool = ClientOptions.wait_for_ready,
        tls: bool = ClientOptions.tls,
        root_certificates: Pem | None = None,
        client_certificate: Pem | None = None,
        client_key: Pem | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
    ) -> None:
        """Connect to the server at ``address`` (``host:port``); the channel is opened lazily.

        Args:
            address: ``host:port`` of the server.
            timeout: seconds one method call may take in total, over every request it splits into
                and every retry; each method also takes its own ``timeout``.
            retries: how many times a call is retried after UNAVAILABLE (never after other errors).
            backoff_s: wait before the first retry; doubles per retry (with jitter) up to
                ``max_backoff_s``.
            max_backoff_s: longest wait between two retries.
            wait_for_ready: wait for an unreachable server until the timeout instead of failing
                (and retrying) with UNAVAILABLE.
            tls: speak TLS, checking the server against the system's trusted roots.
            root_certificates: PEM CA bundle (bytes, PEM text or file path) for the server's
                certificate; implies TLS.
            client_certificate: PEM certificate chain for mutual TLS; with ``client_key``.
            client_key: PEM private key of ``client_certificate``.
            tls_server_name: name to check the server's certificate against, if not the host.
            token: bearer token sent as ``authorization: Bearer <token>`` on every call.
            channel_options: extra gRPC channel arguments.
            interceptors: gRPC client interceptors (``grpc.UnaryUnaryClientInterceptor`` for
                ModelClient, ``grpc.aio.UnaryUnaryClientInterceptor`` for AsyncModelClient).
        """
        self.address = address
        self.options = ClientOptions(
            timeout=timeout,
            retry=RetryPolicy(retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s),
            wait_for_ready=wait_for_ready,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            tls_server_name=tls_server_name,
            token=token,
            channel_options=tuple(channel_options),
        )
        self._interceptors = tuple(interceptors)
        self._operations = Operations(self.options.timeout, self.options.retry)
        self._jobs = FineTuneOperations(self._operations)
        self._metadata = self.options.metadata()
        self._setup()

    def _setup(self) -> None:
        """Subclasses prepare their channel here."""

    def _new_channel(self, grpc_module: Any, **extra: Any) -> Any:
        """A channel from ``grpc`` or ``grpc.aio`` (same factory signatures) with these options."""
        credentials = self.options.credentials()
        options = self.options.grpc_options()
        if credentials is None:
            return grpc_module.insecure_channel(self.address, options=options, **extra)
        return grpc_module.secure_channel(self.address, credentials, options=options, **extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r}, timeout={self.options.timeout:g})"

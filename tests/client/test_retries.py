"""UNAVAILABLE is retried with backoff within the call's deadline; nothing else is retried."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from client import DeadlineExceeded, InvalidImage, ModelClient, ModelNotFound, Unavailable
from protos.imageserve.v1 import image_service_pb2 as pb
from tests.client.conftest import CLASSIFIER, Recorder
from tests.servers import HeldPort, InProcessServer, free_port, test_settings, wait_for


def test_a_call_made_before_the_server_starts_succeeds_once_it_is_up(model_root, photos, caplog):
    caplog.set_level(logging.INFO, logger="client")
    held = HeldPort()  # bound, not listening: connections are refused until the server takes it
    port = held.port
    outcome: dict[str, object] = {}

    def call() -> None:
        with ModelClient(
            f"127.0.0.1:{port}", timeout=120, retries=1000, backoff_s=0.05, max_backoff_s=0.5
        ) as client:
            try:
                outcome["result"] = client.classify(photos["chelsea.png"], CLASSIFIER)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    retried = lambda: [r for r in caplog.records if "failed to connect" in r.getMessage().lower()]  # noqa: E731
    wait_for(retried, timeout=30, what="the client to retry against the closed port")
    # Listening before the models are loaded: the client also retries "model is loading".
    server = InProcessServer(test_settings(model_root, port=port))
    held.release()
    server.start(wait_loaded=False)
    try:
        caller.join(timeout=180)
    finally:
        server.stop()
    assert not caller.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].version == 1 and len(outcome["result"]) == 1


def test_retries_stop_at_the_deadline():
    started = time.monotonic()
    with ModelClient(
        f"127.0.0.1:{free_port()}", timeout=1.0, retries=10_000, backoff_s=0.05, max_backoff_s=0.2
    ) as client:
        with pytest.raises(Unavailable) as caught:
            client.list_models()
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed
    assert caught.value.attempts > 2
    assert f"gave up after {caught.value.attempts} attempts" in str(caught.value)


def test_retries_stop_after_their_count():
    with ModelClient(
        f"127.0.0.1:{free_port()}", timeout=60, retries=2, backoff_s=0.01, max_backoff_s=0.02
    ) as client:
        with pytest.raises(Unavailable) as caught:
            client.list_models()
    assert caught.value.attempts == 3
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_wait_for_ready_waits_until_the_timeout_instead():
    with ModelClient(f"127.0.0.1:{free_port()}", timeout=0.5, wait_for_ready=True) as client:
        with pytest.raises(DeadlineExceeded):
            client.list_models()


@pytest.mark.parametrize(
    "images, model, error",
    [([b"not an image at all"], CLASSIFIER, InvalidImage), ([b"x"], "vgg61", ModelNotFound)],
    ids=["invalid-image", "unknown-model"],
)
def test_other_errors_are_not_retried(server, images, model, error):
    recorder = Recorder()
    with ModelClient(server.address, timeout=30, retries=5, interceptors=[recorder]) as client:
        with pytest.raises(error):
            client.classify(images, model)
    assert len(recorder.sent("Classify")) == 1


class MetadataEcho:
    """A bare gRPC server answering GetServerInfo and recording the metadata of each call."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.server(ThreadPoolExecutor(1))
        handler = grpc.unary_unary_rpc_method_handler(
            self._info,
            request_deserializer=pb.GetServerInfoRequest.FromString,
            response_serializer=pb.ServerInfo.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "imageserve.v1.ImageModelService", {"GetServerInfo": handler}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _info(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.ServerInfo(server_version="echo")


def test_the_token_is_sent_as_bearer_authorization():
    echo = MetadataEcho()
    try:
        with ModelClient(f"127.0.0.1:{echo.port}", token="s3cret") as client:
            assert client.server_info().server_version == "echo"
        with ModelClient(f"127.0.0.1:{echo.port}") as client:
            client.server_info()
    finally:
        echo.server.stop(None)
    assert echo.metadata[0]["authorization"] == "Bearer s3cret"
    assert "authorization" not in echo.metadata[1]


def test_tls_options_are_checked():
    with pytest.raises(ValueError, match="client_certificate and client_key go together"):
        ModelClient("localhost:1", client_certificate=b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="root_certificates: cannot read /nonexistent/ca.pem"):
        ModelClient("localhost:1", root_certificates="/nonexistent/ca.pem")

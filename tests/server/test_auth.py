"""Token auth: no token or a wrong one is UNAUTHENTICATED, a token without the scope is
PERMISSION_DENIED, health and reflection stay open, and no secret leaks into a message."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import ModelClient, PermissionDenied, Unauthenticated
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.auth import TokenTable
from server.settings import SettingsError
from tests.conftest import CLASSIFIER
from tests.pki import READ_TOKEN, TUNE_ONLY_TOKEN, TUNE_TOKEN
from tests.servers import InProcessServer, SubprocessServer, loopback_args, test_settings


@pytest.fixture(scope="module")
def server(model_root, tokens_file):
    running = InProcessServer(test_settings(model_root, auth_tokens_file=tokens_file)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as channel:
        yield channel


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def classify_request(photos) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.png"]])


def test_no_token_and_wrong_token_are_unauthenticated(channel, photos):
    stub = pb_grpc.ImageModelServiceStub(channel)
    for metadata, message in (((), "missing token"), (bearer("guess-guess-guess-guess"), "invalid token")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(classify_request(photos), metadata=metadata, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in caught.value.details() and "guess" not in caught.value.details()


def test_a_read_token_reads_but_cannot_fine_tune(channel, photos):
    stub = pb_grpc.ImageModelServiceStub(channel)
    assert stub.Classify(classify_request(photos), metadata=bearer(READ_TOKEN), timeout=60).model.version == 1
    assert stub.ListModels(pb.ListModelsRequest(), metadata=bearer(READ_TOKEN)).models[0].name == CLASSIFIER
    start = pb.StartFineTuneRequest(output_model="mine", dataset_id="x")
    for call in (
        lambda: stub.StartFineTune(start, metadata=bearer(READ_TOKEN), timeout=30),
        lambda: stub.CancelFineTuneJob(
            pb.CancelFineTuneJobRequest(job_id="x"), metadata=bearer(READ_TOKEN), timeout=30
        ),
        lambda: stub.UploadDataset(
            iter([pb.UploadDatasetRequest()]), metadata=bearer(READ_TOKEN), timeout=30
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs a token with the 'finetune' scope" in caught.value.details()
        assert READ_TOKEN not in caught.value.details()


def test_a_finetune_token_gets_through_to_the_service(channel):
    stub = pb_grpc.ImageModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelFineTuneJob(
            pb.CancelFineTuneJobRequest(job_id="no-such-job"), metadata=bearer(TUNE_TOKEN), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # authorised: the service itself answered


def test_health_and_reflection_need_no_token(channel):
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    assert "imageserve.v1.ImageModelService" in set(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_tf_serving_api_is_protected_too(channel, photos):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = CLASSIFIER
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelStatus(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.GetModelStatus(request, metadata=bearer(READ_TOKEN), timeout=30).model_version_status


def test_the_client_library_sends_its_token(server, photos):
    with ModelClient(server.address, token=READ_TOKEN) as client:
        assert client.classify(photos["chelsea.png"], model=CLASSIFIER).version == 1
    with ModelClient(server.address) as client, pytest.raises(Unauthenticated):
        client.classify(photos["chelsea.png"], model=CLASSIFIER)
    with (
        ModelClient(server.address, token=TUNE_ONLY_TOKEN) as client,
        pytest.raises(PermissionDenied, match="'read'"),
    ):
        client.classify(photos["chelsea.png"], model=CLASSIFIER)


def test_tokens_from_the_environment(real_model_root, tmp_path, photos):
    server = SubprocessServer(  # python -m server: a real model
        loopback_args(real_model_root, "--state-dir", str(tmp_path / "state")),
        env={"IMAGESERVE_AUTH_TOKENS": f"{READ_TOKEN} read; {TUNE_TOKEN} read,finetune"},
    ).start()
    try:
        server.wait_serving()
        with ModelClient(server.address, token=TUNE_TOKEN, timeout=60) as client:
            assert client.classify(photos["coffee.png"], model=CLASSIFIER).version == 1
        assert READ_TOKEN not in server.log_text() and TUNE_TOKEN not in server.log_text()
        assert "token auth, 2 tokens" in server.log_text()
    finally:
        server.terminate()


@pytest.mark.parametrize(
    "entries, message",
    [
        (["short read"], "at least 16 characters"),
        (["a-long-enough-token-1234 admin"], "unknown scopes ['admin']"),
        (["a-long-enough-token-1234"], "expected '<token> <scope>"),
    ],
)
def test_malformed_token_entries_are_refused_at_start(entries, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TokenTable.parse(entries, "auth_tokens")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(channel, photos, scheme):
    """RFC 7235: the scheme is a case-insensitive token; `bearer <token>` is a Bearer token."""
    stub = pb_grpc.ImageModelServiceStub(channel)
    response = stub.Classify(
        classify_request(photos), metadata=(("authorization", f"{scheme} {READ_TOKEN}"),)
    )
    assert response.model.version == 1


def test_bearer_token_reads_only_the_bearer_scheme():
    from server.auth import bearer_token

    assert bearer_token("Bearer abc") == bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token("") is None

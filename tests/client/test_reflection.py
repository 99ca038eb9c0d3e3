"""Other languages and grpcurl discover the API by server reflection: the service, its methods and
messages are all there, and a request built from reflected descriptors alone (as grpcurl builds it
from the JSON in docs/client.md) is answered."""

from __future__ import annotations

import base64
import json
import re

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.client.conftest import CLASSIFIER, FEATURES
from tests.conftest import REPO_ROOT

SERVICE = "imageserve.v1.ImageModelService"


@pytest.fixture(scope="module")
def reflected(server):
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        yield channel, database, descriptor_pool.DescriptorPool(database)


def test_services_are_listed(reflected):
    _channel, database, _pool = reflected
    services = set(database.get_services())
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_every_method_and_message_is_described(reflected):
    _channel, _database, pool = reflected
    service = pool.FindServiceByName(SERVICE)
    expected = pb.DESCRIPTOR.services_by_name["ImageModelService"]
    assert [m.name for m in service.methods] == [m.name for m in expected.methods]
    for method in service.methods:
        local = expected.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            local.input_type.full_name,
            local.output_type.full_name,
        )
    # The well-known import comes along: ModelMetadata.created_at is a google.protobuf.Timestamp.
    metadata = pool.FindMessageTypeByName("imageserve.v1.ModelMetadata")
    assert metadata.fields_by_name["created_at"].message_type.full_name == "google.protobuf.Timestamp"


def call_with_json(reflected, method: str, body: dict) -> dict:
    """What grpcurl does: JSON -> a message class made from reflected descriptors -> call -> JSON."""
    channel, _database, pool = reflected
    descriptor = pool.FindServiceByName(SERVICE).methods_by_name[method]
    request_cls = message_factory.GetMessageClass(descriptor.input_type)
    response_cls = message_factory.GetMessageClass(descriptor.output_type)
    request = json_format.ParseDict(body, request_cls())
    call = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return json.loads(json_format.MessageToJson(call(request, timeout=60)))


def readme_grpcurl_calls() -> list[tuple[str, str]]:
    """(method, JSON body) of each ``grpcurl ... ImageModelService/<Method>`` line of docs/client.md."""
    text = (REPO_ROOT / "docs" / "client.md").read_text()
    section = text[
        text.index("<!-- section:other-languages -->") : text.index("<!-- /section:other-languages -->")
    ]
    pattern = re.compile(
        r"^grpcurl -plaintext (?:-d '(.*)' )?localhost:8500 imageserve\.v1\.ImageModelService/(\w+)$"
    )
    return [
        (match.group(2), match.group(1) or "{}")
        for match in map(pattern.match, section.splitlines())
        if match is not None
    ]


def test_the_readme_grpcurl_requests_are_answered(reflected, photos):
    calls = readme_grpcurl_calls()
    assert sorted({method for method, _ in calls}) == [
        "Classify",
        "ExtractFeatures",
        "GetModelStatus",
        "GetServerInfo",
        "ListModels",
    ]
    image = base64.b64encode(photos["chelsea.jpg"]).decode()
    answers = {}
    for method, body in calls:
        request = json.loads(body.replace("'$(base64 -w0 cat.jpg)'", image))
        if request.get("model", {}).get("name") == "mobilenet_v2":
            request["model"]["name"] = CLASSIFIER  # the test server's offline stand-in
        if "version_label" in request.get("model", {}):  # the test server has no labels configured
            with pytest.raises(grpc.RpcError) as caught:
                call_with_json(reflected, method, request)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert "unknown version label 'stable'" in caught.value.details()
            continue
        answers[method] = call_with_json(reflected, method, request)

    assert answers["Classify"]["model"] == {"name": CLASSIFIER, "version": "1"}
    assert len(answers["Classify"]["results"][0]["predictions"]) == 3
    assert answers["ExtractFeatures"]["dimension"] == 512
    assert len(answers["ExtractFeatures"]["features"][0]["values"]) == 512
    assert [m["name"] for m in answers["ListModels"]["models"]] == [CLASSIFIER, FEATURES]
    assert answers["GetModelStatus"]["versions"][0]["state"] == "AVAILABLE"
    assert answers["GetServerInfo"]["maxImagesPerRequest"] == 64

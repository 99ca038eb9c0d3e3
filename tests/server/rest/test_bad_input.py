"""Malformed and hostile REST and V2 requests get 400 / INVALID_ARGUMENT naming the problem, never a
500 with a traceback, and a large body does not stall the other requests."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse

import grpc
import pytest

from protos.inference import grpc_service_pb2 as v2
from protos.inference import grpc_service_pb2_grpc as v2_grpc
from tests.conftest import CLASSIFIER
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings

DEEP = 100_000


@pytest.fixture(scope="module")
def server(model_root):
    running = InProcessServer(test_settings(model_root, rest_port=0)).start()
    yield running
    running.stop()


def images_input(photos) -> dict:
    return {
        "name": "images",
        "datatype": "BYTES",
        "shape": [1],
        "data": [{"b64": base64.b64encode(photos["coffee.png"]).decode()}],
    }


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"inputs": 5}, "'inputs' must be a JSON list"),
        ({"inputs": True}, "'inputs' must be a JSON list"),
        ({"inputs": [], "outputs": 5}, "'outputs' must be a JSON list"),
        ({"inputs": [], "outputs": [{"name": ["probabilities"]}]}, "each output needs a name"),
        (
            {"inputs": [], "parameters": {"signature": ["classify"]}},
            "must be a string, a number or a boolean",
        ),
        ({"inputs": [], "id": {"x": 1}}, "'id' must be a string"),
        (
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [4294967296, 4294967296]}]},
            "neither data nor binary_data_size",
        ),
        (
            {
                "inputs": [
                    {"name": "images", "datatype": "BYTES", "shape": [4294967296, 4294967296], "data": []}
                ]
            },
            "images in one request; the maximum is 64",
        ),
        (
            {
                "inputs": [
                    {"name": "pixels", "datatype": "UINT8", "shape": [4294967296, 4294967296], "data": []}
                ]
            },
            "does not hold its 0 elements",
        ),
        (
            {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1] * 9, "data": [[1]]}]},
            "9 dimensions; at most 8",
        ),
    ],
    ids=[
        "inputs-number",
        "inputs-bool",
        "outputs-number",
        "output-name-list",
        "parameter-list",
        "id-object",
        "huge-shape-no-data",
        "huge-bytes-shape",
        "huge-uint8-shape",
        "too-many-dimensions",
    ],
)
def test_malformed_v2_documents_are_400(server, body, fragment):
    answer = http("POST", f"{server.rest_address}/v2/models/{CLASSIFIER}/infer", body)
    assert answer.status == 400, answer.body
    assert fragment in answer.json()["error"], answer.json()


@pytest.mark.parametrize("route", ["v2-infer", "v2-index", "tfserving-predict"])
def test_json_nested_too_deeply_is_400(server, route):
    path = {
        "v2-infer": f"/v2/models/{CLASSIFIER}/infer",
        "v2-index": "/v2/repository/index",
        "tfserving-predict": f"/v1/models/{CLASSIFIER}:predict",
    }[route]
    answer = http("POST", server.rest_address + path, b"[" * DEEP + b"]" * DEEP)
    assert answer.status == 400 and "nested too deeply" in answer.json()["error"], answer.body


def test_data_nested_deeper_than_a_tensor_is_400(server):
    nested: object = 1
    for _ in range(600):
        nested = [nested]
    v2_body = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1], "data": nested}]}
    answer = http("POST", f"{server.rest_address}/v2/models/{CLASSIFIER}/infer", v2_body)
    assert answer.status == 400 and "nested deeper than 8 levels" in answer.json()["error"]
    answer = http("POST", f"{server.rest_address}/v1/models/{CLASSIFIER}:predict", {"instances": nested})
    assert answer.status == 400 and "nested deeper than" in answer.json()["error"]


@pytest.mark.parametrize("version", ["²", "1²", "9" * 5000])
def test_versions_that_are_not_numbers_are_400_on_every_door(server, channel, photos, version):
    base = server.rest_address
    quoted = urllib.parse.quote(version)
    v2_rest = http(
        "POST", f"{base}/v2/models/{CLASSIFIER}/versions/{quoted}/infer", {"inputs": [images_input(photos)]}
    )
    tf_rest = http("GET", f"{base}/v1/models/{CLASSIFIER}/versions/{quoted}")
    for answer in (v2_rest, tf_rest):
        assert answer.status == 400 and "positive integer of at most 18 digits" in answer.json()["error"], (
            answer.body
        )
    request = v2.ModelInferRequest(model_name=CLASSIFIER, model_version=version)
    with pytest.raises(grpc.RpcError) as caught:
        v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "positive integer of at most 18 digits" in caught.value.details()


@pytest.mark.parametrize("length", ["²", "9" * 5000, "-1"])
def test_a_binary_header_length_that_is_not_a_number_is_400(server, length):
    answer = http(
        "POST",
        f"{server.rest_address}/v2/models/{CLASSIFIER}/infer",
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"},
    )
    assert answer.status == 400 and "Inference-Header-Content-Length must be" in answer.json()["error"]


def test_a_binary_bytes_tensor_of_millions_of_elements_is_refused_before_it_is_split(server):
    count = 3_000_000
    blob = b"\x00\x00\x00\x00" * count  # three million empty BYTES elements
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    started = time.monotonic()
    answer = http(
        "POST",
        f"{server.rest_address}/v2/models/{CLASSIFIER}/infer",
        header + blob,
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert answer.status == 400 and "3,000,000 images in one request" in answer.json()["error"]
    assert time.monotonic() - started < 10


def test_a_large_body_does_not_stall_the_other_requests(server, channel):
    """32 MB of JSON numbers take seconds to parse (2.4 s for json.loads alone here, holding the GIL):
    on the event loop that stalled every door; now the parser process parses it while health checks
    keep answering."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    count = 8_000_000
    body = b'{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [%d], "data": [' % count
    body += b"0.5," * (count - 1) + b"0.5]}]}"
    assert len(body) < 64 * 1024 * 1024
    health = health_pb2_grpc.HealthStub(channel)
    answers: list = []
    latencies: list[float] = []
    url = f"{server.rest_address}/v2/models/{CLASSIFIER}/infer"
    sender = threading.Thread(target=lambda: answers.append(http("POST", url, body, timeout=120)))
    sender.start()
    while sender.is_alive():
        started = time.monotonic()
        health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    sender.join()
    (answer,) = answers
    assert answer.status == 400, answer.body  # FP32 data is no image: refused, once parsed
    assert len(latencies) > 20 and max(latencies) < 1.0, f"health answered in up to {max(latencies):.2f} s"

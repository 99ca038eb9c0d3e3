"""The Open Inference Protocol over HTTP (REST port): tritonclient.http and plain HTTP get Classify's
answers."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.conftest import CLASSIFIER, FEATURES
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the test extra")
from tritonclient.utils import InferenceServerException  # noqa: E402 - needs the importorskip above

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def server(model_root):
    """A server with REST on, and a small message limit (so a too-large body is cheap to send)."""
    settings = test_settings(model_root, rest_port=0, max_message_bytes=MAX_MESSAGE_BYTES)
    running = InProcessServer(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base(server) -> str:
    return f"http://127.0.0.1:{server.server.rest.port}"


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.server.rest.port}")
    yield client
    client.close()


def top5(row) -> list[int]:
    return [int(c) for c in np.argsort(-np.asarray(row), kind="stable")[:5]]


def classify_top5(stub, images) -> list[list[int]]:
    response = stub.Classify(pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=5))
    return [[p.class_id for p in r.predictions] for r in response.results]


def test_tritonclient_http_health_metadata_and_infer(triton, stub, photos):
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(CLASSIFIER)
    assert not triton.is_model_ready("nope")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    assert triton.get_model_metadata(CLASSIFIER, "1")["versions"] == ["1"]
    images = [photos["chelsea.jpg"], photos["coffee.png"]]
    tensor = httpclient.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    for binary in (True, False):
        result = triton.infer(
            CLASSIFIER,
            [tensor],
            outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)],
        )
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (2, 1000)
        assert [top5(row) for row in probabilities] == classify_top5(stub, images)
    index = triton.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {(CLASSIFIER, "READY"), (FEATURES, "READY")}


def test_tritonclient_http_errors(triton, photos):
    tensor = httpclient.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(CLASSIFIER, [tensor])
    assert caught.value.status() == "400" and "image 0:" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("nope", [tensor])
    assert caught.value.status() == "404" and "unknown model 'nope'" in caught.value.message()


def test_plain_http_json_infer_with_b64_images(base, stub, photos):
    images = [photos["chelsea.png"], photos["coffee.jpg"]]
    request = {
        "id": "42",
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [2],
                "data": [{"b64": base64.b64encode(i).decode()} for i in images],
            }
        ],
        "outputs": [{"name": "probabilities"}],
    }
    answer = http(
        "POST", f"{base}/v2/models/{CLASSIFIER}/versions/1/infer", request, {"X-Request-Id": "rest-1"}
    )
    assert answer.status == 200 and answer.headers["X-Request-Id"] == "rest-1"
    body = answer.json()
    assert body["model_name"] == CLASSIFIER and body["model_version"] == "1" and body["id"] == "42"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 1000]
    rows = np.asarray(output["data"], np.float32).reshape(2, 1000)
    assert [top5(row) for row in rows] == classify_top5(stub, images)


def test_plain_http_pixels_and_signature_parameter(base, stub, photos):
    from tests.images import decode_rgb

    pixels = decode_rgb(photos["chelsea.png"])[::8, ::8][None]
    request = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "UINT8",
                "shape": list(pixels.shape),
                "data": pixels.ravel().tolist(),
            }
        ],
        "parameters": {"signature": "features_pixels"},
    }
    answer = http("POST", f"{base}/v2/models/{FEATURES}/infer", request)
    assert answer.status == 200, answer.body
    (output,) = answer.json()["outputs"]
    assert output["name"] == "features" and output["shape"][0] == 1


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "unknown model 'nope'"),
        (f"/v2/models/{CLASSIFIER}/versions/7/infer", {"inputs": []}, 404, "has no version 7"),
        (f"/v2/models/{CLASSIFIER}/infer", b"{not json", 400, "not JSON"),
        (
            f"/v2/models/{CLASSIFIER}/infer",
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [65], "data": ["x"] * 65}]},
            400,
            "65 images in one request; the maximum is 64",
        ),
        (
            f"/v2/models/{CLASSIFIER}/infer",
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": ["x"]}]},
            400,
            "shape [2] does not hold its 1 elements",
        ),
        (f"/v2/models/{CLASSIFIER}/infer", b"x" * (MAX_MESSAGE_BYTES + 1), 413, "exceeded"),
        ("/v2/nowhere", None, 404, "no REST endpoint"),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "not-json",
        "too-many-images",
        "bad-shape",
        "too-large",
        "no-route",
    ],
)
def test_errors_are_json_with_the_right_status(base, path, body, status, message):
    answer = http("POST" if body is not None else "GET", base + path, body)
    assert answer.status == status and answer.headers["Content-Type"].startswith("application/json")
    assert message in answer.json()["error"]


def test_health_paths(base):
    assert http("GET", f"{base}/v2/health/live").json() == {"live": True}
    assert http("GET", f"{base}/v2/health/ready").status == 200
    assert http("GET", f"{base}/v2/models/{CLASSIFIER}/versions/1/ready").json() == {
        "name": CLASSIFIER,
        "ready": True,
    }
    assert http("GET", f"{base}/v2/models/nope/ready").status == 400

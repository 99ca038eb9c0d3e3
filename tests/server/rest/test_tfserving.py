"""TensorFlow Serving's REST API: the requests of its documentation (api_rest.md), sent unchanged
but for the model name and data, get TF Serving's answers, with the same numbers as Classify."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.answers import assert_same_features, assert_same_probabilities
from tests.conftest import CLASSIFIER, FEATURES
from tests.images import decode_rgb
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings


@pytest.fixture(scope="module")
def server(model_root):
    running = InProcessServer(test_settings(model_root, rest_port=0)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base(server) -> str:
    return f"http://127.0.0.1:{server.server.rest.port}"


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def classify_rows(stub, images) -> np.ndarray:
    response = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=1000)
    )
    rows = np.zeros((len(images), 1000), np.float32)
    for row, result in zip(rows, response.results):
        for p in result.predictions:
            row[p.class_id] = p.score
    return rows


def test_documented_model_status(base):
    # api_rest.md: `curl http://localhost:8501/v1/models/half_plus_three`, answer shape as documented.
    answer = http("GET", f"{base}/v1/models/{CLASSIFIER}")
    assert answer.status == 200
    assert answer.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert http("GET", f"{base}/v1/models/{CLASSIFIER}/versions/1").json() == answer.json()
    assert http("GET", f"{base}/v1/models/{CLASSIFIER}/versions/3").status == 404


def test_documented_not_found_example(base):
    # api_rest.md, verbatim: curl -i -d '{"instances": [1.0,5.0]}' -X POST http://localhost:8501/v1/models/half:predict
    answer = http("POST", f"{base}/v1/models/half:predict", b'{"instances": [1.0,5.0]}')
    assert answer.status == 404 and answer.headers["Content-Type"].startswith("application/json")
    assert set(answer.json()) == {"error"} and "unknown model 'half'" in answer.json()["error"]


@pytest.mark.parametrize(
    "request_body, key",
    [
        # Row format, one named input: "the value of instances key [is] the value of the input".
        (lambda images: {"instances": [b64(i) for i in images]}, "predictions"),
        # Row format, list of objects: one name/value pair per named input.
        (lambda images: {"instances": [{"images": b64(i)} for i in images]}, "predictions"),
        # Columnar format, a map of input name to tensor.
        (lambda images: {"inputs": {"images": [b64(i) for i in images]}}, "outputs"),
        # Columnar format, a single input tensor; with signature_name.
        (lambda images: {"signature_name": "classify", "inputs": [b64(i) for i in images]}, "outputs"),
    ],
    ids=["rows", "rows-named", "columns-named", "columns-signature"],
)
def test_documented_predict_formats_match_classify(base, stub, photos, request_body, key):
    images = [photos["chelsea.jpg"], photos["coffee.png"]]
    answer = http("POST", f"{base}/v1/models/{CLASSIFIER}:predict", request_body(images))
    assert answer.status == 200, answer.body
    assert list(answer.json()) == [key]
    assert_same_probabilities(np.asarray(answer.json()[key], np.float32), classify_rows(stub, images))


def test_predict_pixels_matches_grpc_predict(base, channel, photos):
    pixels = decode_rgb(photos["chelsea.png"])[::8, ::8][None]
    answer = http(
        "POST",
        f"{base}/v1/models/{FEATURES}/versions/1:predict",
        {"signature_name": "features_pixels", "instances": pixels.tolist()},
    )
    assert answer.status == 200, answer.body
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = FEATURES, "features_pixels"
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))
    expected = tf.make_ndarray(
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request).outputs["features"]
    )
    assert_same_features(np.asarray(answer.json()["predictions"], np.float32), expected)


def test_metadata(base):
    answer = http("GET", f"{base}/v1/models/{CLASSIFIER}/metadata").json()
    assert answer["model_spec"]["name"] == CLASSIFIER and answer["model_spec"]["version"] == "1"
    definitions = answer["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify", "classify_pixels", "features", "features_pixels"} <= set(
        definitions
    )
    assert definitions["classify"]["inputs"]["images"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        (f"/v1/models/{CLASSIFIER}:predict", {"instances": [b64(b"not an image")]}, 400, "image 0:"),
        (f"/v1/models/{CLASSIFIER}:predict", {"instances": [], "inputs": []}, 400, "either 'instances'"),
        (
            f"/v1/models/{CLASSIFIER}:predict",
            {"signature_name": "explode", "instances": [b64(b"x")]},
            400,
            "signatures:",
        ),
        (f"/v1/models/{CLASSIFIER}:predict", {"instances": [{"b64": "%%%"}]}, 400, "not valid base64"),
        (f"/v1/models/{CLASSIFIER}:regress", {"examples": []}, 400, "answers ':predict'"),
        (f"/v1/models/{CLASSIFIER}/labels/stable", None, 404, "unknown version label 'stable'"),
    ],
    ids=["bad-image", "both-formats", "unknown-signature", "bad-base64", "regress", "unknown-label"],
)
def test_errors_are_json_with_the_right_status(base, path, body, status, message):
    answer = http("POST" if body is not None else "GET", base + path, body)
    assert answer.status == status and message in answer.json()["error"]

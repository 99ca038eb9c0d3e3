"""Clients built on ``tensorflow-serving-api`` work unchanged, and get the same numbers as Classify."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.answers import assert_same_features, assert_same_probabilities
from tests.conftest import CLASSIFIER, FEATURES
from tests.images import decode_rgb


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict(stub, name, signature, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return stub.Predict(request, timeout=60)


def test_predict_with_bytes_matches_classify(predictions, stub, photos):
    images = [photos["chelsea.jpg"], photos["coffee.png"]]
    response = predict(predictions, CLASSIFIER, "serving_default", images=images)
    assert response.model_spec.name == CLASSIFIER and response.model_spec.version.value == 1
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (2, 1000)
    classified = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=1000)
    )
    for row, result in zip(probabilities, classified.results):
        expected = np.zeros(1000, np.float32)
        for p in result.predictions:
            expected[p.class_id] = p.score
        assert_same_probabilities(row, expected)


def test_predict_with_uint8_pixels_matches_extract_features(predictions, stub, photos):
    pixels = decode_rgb(photos["chelsea.png"])[None]
    response = predict(predictions, FEATURES, "features_pixels", pixels=pixels)
    features = tf.make_ndarray(response.outputs["features"])
    extracted = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=[photos["chelsea.png"]])
    )
    assert_same_features(features[0], extracted.features[0].values)
    assert response.model_spec.signature_name == "features_pixels"


def test_predict_errors_use_the_same_codes(predictions, photos):
    with pytest.raises(grpc.RpcError) as caught:
        predict(predictions, "nope", "serving_default", images=[photos["chelsea.png"]])
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        predict(predictions, CLASSIFIER, "classify", images=[b"not an image"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image 0:" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        predict(predictions, CLASSIFIER, "explode", images=[photos["chelsea.png"]])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "signatures:" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        predict(predictions, CLASSIFIER, "classify_pixels", pixels=np.zeros((1, 8, 8), np.uint8))
    assert (
        caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "uint8 [N, H, W, 3]" in caught.value.details()
    )


def test_get_model_metadata_lists_signature_defs(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = CLASSIFIER
    response = predictions.GetModelMetadata(request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    defs = signature_map.signature_def
    assert {"serving_default", "classify", "classify_pixels", "features", "features_pixels"} <= set(defs)
    assert defs["classify"].inputs["images"].dtype == tf.string.as_datatype_enum
    assert defs["classify_pixels"].inputs["pixels"].dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in defs["classify"].outputs["probabilities"].tensor_shape.dim] == [-1, 1000]
    assert response.model_spec.version.value == 1


def test_model_service_reports_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = CLASSIFIER
    (status,) = stub.GetModelStatus(request).model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_requests_for_unknown_versions_add_no_metrics_series(server, channel, predictions, photos):
    """Label values come from bounded sets: a version a failed call asked for is not one."""
    from prometheus_client import generate_latest

    def series() -> int:
        text = generate_latest(server.server.metrics.registry).decode()
        return sum(1 for line in text.splitlines() if line.startswith("imageserve_requests_total{"))

    models = model_service_pb2_grpc.ModelServiceStub(channel)
    before = None
    for version in range(1000, 1200):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = CLASSIFIER
        request.model_spec.version.value = version
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([photos["coffee.png"]]))
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name, status.model_spec.version.value = CLASSIFIER, version
        for call, message in ((predictions.Predict, request), (models.GetModelStatus, status)):
            with pytest.raises(grpc.RpcError) as caught:
                call(message, timeout=30)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        before = series() if before is None else before
    assert series() == before

"""Open Inference Protocol (KServe V2) over gRPC, called with the real ``tritonclient.grpc``."""

from __future__ import annotations

import numpy as np
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.answers import assert_same_features, assert_same_probabilities
from tests.conftest import CLASSIFIER, FEATURES
from tests.images import decode_rgb

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is in the test extra")
from tritonclient.utils import InferenceServerException  # noqa: E402 - needs the importorskip above


@pytest.fixture(scope="module")
def triton(server):
    client = grpcclient.InferenceServerClient(server.address)
    yield client
    client.close()


def images_input(*images: bytes):
    tensor = grpcclient.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def top5(row: np.ndarray) -> list[int]:
    return [int(c) for c in np.argsort(-row, kind="stable")[:5]]


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(CLASSIFIER) and triton.is_model_ready(CLASSIFIER, "1")
    assert not triton.is_model_ready("nope") and not triton.is_model_ready(CLASSIFIER, "7")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "imageserve" and "model_repository" in server["extensions"]
    metadata = triton.get_model_metadata(CLASSIFIER, as_json=True)
    assert metadata["versions"] == ["1"] and metadata["platform"] == "tensorflow_savedmodel"
    assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {
        ("images", "BYTES"),
        ("pixels", "UINT8"),
    }
    assert [(t["name"], t["shape"]) for t in metadata["outputs"]] == [
        ("probabilities", ["-1", "1000"]),
        ("features", ["-1", "1280"]),
    ]
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        (CLASSIFIER, "1", "READY"),
        (FEATURES, "1", "READY"),
    }


def test_infer_images_gives_classify_top5(triton, stub, photos):
    images = [photos["chelsea.jpg"], photos["coffee.png"]]
    result = triton.infer(
        CLASSIFIER,
        [images_input(*images)],
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        request_id="r1",
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, 1000)
    response = result.get_response()
    assert response.model_name == CLASSIFIER and response.model_version == "1" and response.id == "r1"
    classified = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=5)
    )
    assert top5(probabilities[0]) != top5(probabilities[1])  # the answers depend on the image
    for row, expected in zip(probabilities, classified.results):
        assert top5(row) == [p.class_id for p in expected.predictions]
        assert_same_probabilities(np.sort(row)[::-1][:5], [p.score for p in expected.predictions])


def test_infer_pixels_and_signature_parameter(triton, stub, photos):
    pixels = decode_rgb(photos["chelsea.png"])[None]
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = triton.infer(FEATURES, [tensor], model_version="1")
    extracted = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=[photos["chelsea.png"]])
    )
    assert_same_features(result.as_numpy("features")[0], extracted.features[0].values)
    # The classifier's features, chosen by the signature parameter instead of an output name.
    chosen = triton.infer(
        CLASSIFIER, [images_input(photos["chelsea.png"])], parameters={"signature": "features"}
    )
    assert chosen.as_numpy("probabilities") is None and chosen.as_numpy("features").shape == (1, 1280)
    both = triton.infer(
        CLASSIFIER,
        [images_input(photos["chelsea.png"])],
        outputs=[
            grpcclient.InferRequestedOutput("probabilities"),
            grpcclient.InferRequestedOutput("features"),
        ],
    )
    assert_same_features(both.as_numpy("features"), chosen.as_numpy("features"))
    assert both.as_numpy("probabilities").shape == (1, 1000)


@pytest.mark.parametrize(
    "call, status, message",
    [
        (lambda c, p: c.infer("nope", [images_input(p)]), "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        (
            lambda c, p: c.infer(CLASSIFIER, [images_input(p)], model_version="7"),
            "StatusCode.NOT_FOUND",
            "has no version 7",
        ),
        (
            lambda c, p: c.infer(CLASSIFIER, [images_input(b"not an image")]),
            "StatusCode.INVALID_ARGUMENT",
            "image 0:",
        ),
        (
            lambda c, p: c.infer(
                CLASSIFIER, [images_input(p)], outputs=[grpcclient.InferRequestedOutput("logits")]
            ),
            "StatusCode.INVALID_ARGUMENT",
            "unknown outputs ['logits']",
        ),
        (
            lambda c, p: c.infer(CLASSIFIER, [images_input(*[p] * 65)]),
            "StatusCode.INVALID_ARGUMENT",
            "65 images in one request; the maximum is 64",
        ),
        (lambda c, p: c.get_model_metadata("nope"), "StatusCode.NOT_FOUND", "unknown model 'nope'"),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "bad-image",
        "unknown-output",
        "too-many-images",
        "metadata-unknown",
    ],
)
def test_errors_use_our_codes_and_messages(triton, photos, call, status, message):
    with pytest.raises(InferenceServerException) as caught:
        call(triton, photos["chelsea.png"])
    assert caught.value.status() == status and message in caught.value.message()

"""Every bad request gets its status code and a message a user can act on; the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.conftest import CLASSIFIER, FEATURES, fake_model
from tests.images import encode, png_claiming_size

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def classify(stub, images, name=CLASSIFIER, **kwargs):
    spec = kwargs.pop("spec", None) or pb.ModelSpec(name=name)
    return stub.Classify(pb.ClassifyRequest(model=spec, images=images, **kwargs), timeout=60)


def assert_status(call, code, *fragments):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, error.details()
    for fragment in fragments:
        assert fragment in error.details(), error.details()
    return error.details()


@pytest.fixture(autouse=True)
def server_keeps_serving(stub, photos):
    yield
    response = classify(stub, [photos["chelsea.png"]])
    assert response.model.version == 1 and len(response.results) == 1


def small_png() -> bytes:
    return encode(np.full((20, 30, 3), 120, np.uint8))


@pytest.mark.parametrize(
    "bad, fragments",
    [
        (b"", ["image 1: empty image"]),
        (b"\x13\x37" * 500, ["image 1: not a recognised image"]),
        (b"just some text, not a picture\n", ["image 1: text, not an image"]),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", ["image 1: a PDF document"]),
        (
            png_claiming_size(30000, 30000),
            ["image 1: 30000x30000 is 900,000,000 pixels", "at most 40,000,000"],
        ),
        (encode(np.zeros((8, 8, 3), np.uint8), "TIFF"), ["image 1: TIFF images are not supported"]),
    ],
    ids=["empty", "random-bytes", "text", "pdf", "decompression-bomb", "tiff"],
)
def test_unusable_image_is_invalid_argument_naming_its_index(stub, bad, fragments):
    assert_status(lambda: classify(stub, [small_png(), bad]), INVALID, *fragments)


def test_bad_image_index_and_reason_travel_as_status_details(stub):
    """A client reads the image's index and reason as data (google.rpc.BadRequest), not from the text."""
    with pytest.raises(grpc.RpcError) as caught:
        classify(stub, [small_png(), small_png(), b"just some text, not a picture\n"])
    status = rpc_status.from_call(caught.value)  # checks that code and message match the call's
    assert status is not None and status.code == INVALID.value[0]
    assert status.message == caught.value.details()
    assert status.message.startswith("image 2: text, not an image")
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert violation.field == "images[2]"
    assert "image 2: " + violation.description == status.message


def test_other_errors_carry_no_status_details(stub):
    with pytest.raises(grpc.RpcError) as caught:
        classify(stub, [small_png()], top_k=-1)
    assert rpc_status.from_call(caught.value) is None


def test_truncated_png_is_caught_by_the_decoder(stub, photos):
    truncated = photos["coffee.png"][: len(photos["coffee.png"]) // 2]
    assert_status(lambda: classify(stub, [truncated]), INVALID, "image 0: could not decode")


def test_truncated_jpeg_is_caught_by_the_decoder(stub, photos):
    truncated = photos["coffee.jpg"][: len(photos["coffee.jpg"]) // 3]
    assert_status(
        lambda: classify(stub, [small_png(), small_png(), truncated]), INVALID, "image 2: could not decode"
    )


def test_unknown_model_lists_the_available_ones(stub):
    assert_status(
        lambda: classify(stub, [small_png()], name="vgg61"),
        NOT_FOUND,
        "unknown model 'vgg61'",
        CLASSIFIER,
        FEATURES,
    )


def test_unknown_version_lists_the_available_ones(stub):
    spec = pb.ModelSpec(name=CLASSIFIER, version=7)
    assert_status(
        lambda: classify(stub, [small_png()], spec=spec), NOT_FOUND, "no version 7", "available versions: 1"
    )


def test_unknown_version_label(stub):
    spec = pb.ModelSpec(name=CLASSIFIER, version_label="stable")
    assert_status(
        lambda: classify(stub, [small_png()], spec=spec), NOT_FOUND, "unknown version label 'stable'"
    )


@pytest.mark.parametrize("name", ["../etc", "/etc/passwd", "a/b", "..", ""])
def test_model_names_that_are_paths_are_refused(stub, name):
    fragment = "model name is required" if not name else "invalid model name"
    assert_status(lambda: classify(stub, [small_png()], name=name), INVALID, fragment)


@pytest.mark.parametrize("top_k", [0, -1])
def test_top_k_below_one_is_refused(stub, top_k):
    assert_status(lambda: classify(stub, [small_png()], top_k=top_k), INVALID, "top_k must be >= 1")


def test_top_k_above_the_classes_returns_every_class(stub):
    """The CLI's default --top-k 5 on a 2-class fine-tuned model: all classes, not an error."""
    (result,) = classify(stub, [small_png()], top_k=1001).results
    assert len(result.predictions) == 1000 and len({p.class_id for p in result.predictions}) == 1000


def test_no_images(stub):
    assert_status(lambda: classify(stub, []), INVALID, "no images")


def test_too_many_images(stub):
    assert_status(
        lambda: classify(stub, [small_png()] * 65), INVALID, "65 images in one request; the maximum is 64"
    )


def test_classify_on_a_features_only_model(stub):
    assert_status(
        lambda: classify(stub, [small_png()], name=FEATURES),
        grpc.StatusCode.FAILED_PRECONDITION,
        "use ExtractFeatures",
    )


def test_malformed_protobuf_is_invalid_argument(channel):
    raw = channel.unary_unary("/imageserve.v1.ImageModelService/Classify")
    # ClassifyRequest{model: ModelSpec{name: b"\xff\xfe"}}: a string field that is not UTF-8.
    message = b"\x0a\x04" + b"\x0a\x02\xff\xfe"
    with pytest.raises(grpc.RpcError) as caught:
        raw(message, timeout=30)
    assert caught.value.code() == INVALID
    assert "malformed request" in caught.value.details()


def test_internal_errors_are_generic(server, stub):
    fake_model(server, CLASSIFIER).fail_next = RuntimeError("secret detail at /srv/models/private")
    details = assert_status(
        lambda: classify(stub, [small_png()]), grpc.StatusCode.INTERNAL, "internal server error"
    )
    assert "secret" not in details and "/srv" not in details and "Traceback" not in details

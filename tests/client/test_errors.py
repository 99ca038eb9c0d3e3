"""Each error status from a real server becomes its exception, carrying the server's message."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest

import client as api
from client import (
    DeadlineExceeded,
    FailedPrecondition,
    ImageServeError,
    InternalServerError,
    InvalidArgument,
    InvalidImage,
    ModelClient,
    ModelNotFound,
    ServerBusy,
)
from client.errors import ERRORS_BY_CODE, error_from_status
from tests.client.conftest import CLASSIFIER, FEATURES
from tests.conftest import fake_model
from tests.images import encode


def small_png(value: int = 120) -> bytes:
    return encode(np.full((20, 30, 3), value, np.uint8))


def test_unknown_model_lists_the_available_ones(client):
    for call in (
        lambda: client.classify(small_png(), "vgg61"),
        lambda: client.extract_features(small_png(), "vgg61"),
        lambda: client.model_status("vgg61"),
    ):
        with pytest.raises(ModelNotFound) as caught:
            call()
        error = caught.value
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.details == f"unknown model 'vgg61'; available models: {CLASSIFIER}, {FEATURES}"
        assert str(error) == error.details
        assert error.request_id  # the server's id of the call, for its log


def test_unknown_version_and_label(client):
    with pytest.raises(ModelNotFound, match="no version 7 being served; available versions: 1"):
        client.classify(small_png(), CLASSIFIER, version=7)
    with pytest.raises(ModelNotFound, match="unknown version label 'stable'"):
        client.classify(small_png(), CLASSIFIER, label="stable")


def test_bad_image_is_invalid_image_with_its_index(client):
    with pytest.raises(InvalidImage) as caught:
        client.classify([small_png(), small_png(), b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj"], CLASSIFIER)
    error = caught.value
    assert (error.index, error.code) == (2, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.reason.startswith("a PDF document; supported formats: JPEG, PNG")
    assert isinstance(error, InvalidArgument)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(top_k=-1), "top_k must be >= 1"),
        (dict(model="../etc"), "invalid model name '../etc'"),
    ],
)
def test_bad_parameters_are_invalid_argument(client, kwargs, fragment):
    kwargs = {"model": CLASSIFIER, **kwargs}
    with pytest.raises(InvalidArgument, match=fragment.replace(".", r"\.")) as caught:
        client.classify(small_png(), **kwargs)
    assert not isinstance(caught.value, InvalidImage)


def test_version_and_label_together_are_refused_before_sending(client):
    with pytest.raises(ValueError, match="pass version or label, not both"):
        client.classify(small_png(), CLASSIFIER, version=1, label="stable")


def test_classify_on_a_features_only_model_is_failed_precondition(client):
    with pytest.raises(FailedPrecondition, match="has no 'classify' signature .* use ExtractFeatures"):
        client.classify(small_png(), FEATURES)


def test_a_message_over_the_server_limit_is_server_busy(limited_server, photos):
    with ModelClient(limited_server.address, timeout=60) as limited:
        info = limited.server_info()
        # Make the client believe the server takes 8 MiB, so that it sends a 1.3 MB request.
        limited._operations._server_info = dataclasses.replace(
            info, max_receive_message_bytes=8 * 1024 * 1024
        )
        with pytest.raises(ServerBusy) as caught:
            limited.classify([photos["coffee.png"]] * 3, CLASSIFIER)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details


def test_timeout_is_deadline_exceeded_naming_the_timeout(client, photos):
    with pytest.raises(DeadlineExceeded) as caught:
        client.classify([photos["coffee.png"]] * 8, CLASSIFIER, timeout=0.001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "pass a larger timeout" in str(caught.value)


def test_server_bug_is_internal_with_an_incident_id(server, client):
    fake_model(server, CLASSIFIER).fail_next = RuntimeError("secret detail")
    with pytest.raises(InternalServerError) as caught:
        client.classify(small_png(), CLASSIFIER)
    assert caught.value.details.startswith("internal server error (incident ")
    assert "secret" not in str(caught.value)


def test_every_status_code_has_its_exception():
    expected = {
        "INVALID_ARGUMENT": api.InvalidArgument,
        "OUT_OF_RANGE": api.InvalidArgument,
        "NOT_FOUND": api.ModelNotFound,
        "ALREADY_EXISTS": api.AlreadyExists,
        "FAILED_PRECONDITION": api.FailedPrecondition,
        "RESOURCE_EXHAUSTED": api.ServerBusy,
        "UNAVAILABLE": api.Unavailable,
        "DEADLINE_EXCEEDED": api.DeadlineExceeded,
        "CANCELLED": api.Cancelled,
        "UNAUTHENTICATED": api.Unauthenticated,
        "PERMISSION_DENIED": api.PermissionDenied,
        "UNIMPLEMENTED": api.Unimplemented,
        "INTERNAL": api.InternalServerError,
        "UNKNOWN": api.InternalServerError,
        "DATA_LOSS": api.InternalServerError,
    }
    assert {code.name: cls for code, cls in ERRORS_BY_CODE.items()} == expected
    for name, cls in expected.items():
        error = error_from_status(grpc.StatusCode[name], "the server's message")
        assert type(error) is cls and isinstance(error, ImageServeError)
        assert (error.code.name, error.details, str(error)) == (
            name,
            "the server's message",
            "the server's message",
        )
    assert type(error_from_status(grpc.StatusCode.ABORTED, "x")) is ImageServeError
    image = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "image 12: empty image (0 bytes)")
    assert isinstance(image, InvalidImage) and (image.index, image.reason) == (12, "empty image (0 bytes)")
    shifted = image.shifted(30)
    assert (shifted.index, shifted.details) == (42, "image 42: empty image (0 bytes)")


def test_bad_image_is_read_from_the_status_details_not_the_message():
    # What a server sends with a BadRequest: the index and reason come from the details even where
    # the message says something else (or nothing parseable).
    error = error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "the third image is broken", [("images[2]", "truncated PNG")]
    )
    assert isinstance(error, InvalidImage) and (error.index, error.reason) == (2, "truncated PNG")
    assert error.details == "the third image is broken"
    # A violation of another field is not an image's.
    other = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad top_k", [("top_k", "must be >= 1")])
    assert type(other) is InvalidArgument

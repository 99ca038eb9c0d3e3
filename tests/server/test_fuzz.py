"""Property: whatever bytes and shapes a client sends, Classify answers with a result or
INVALID_ARGUMENT, and the server stays healthy."""

from __future__ import annotations

import io

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.conftest import CLASSIFIER

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MODES = ("RGB", "L", "RGBA", "P", "CMYK", "LA", "1", "I;16")


@st.composite
def encoded_images(draw) -> bytes:
    """Real encodings of random pixels, in random sizes, modes and formats, sometimes damaged."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    fmt = draw(st.sampled_from(FORMATS))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    try:
        image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = buffer.getvalue()
    except (OSError, ValueError, KeyError):  # a mode the format cannot store: send the PNG instead
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "flip", "prefix"]))
    if damage == "truncate" and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif damage == "flip":
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=8)) + data
    return data


request_images = st.lists(st.one_of(st.binary(max_size=512), encoded_images()), min_size=1, max_size=6)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(images=request_images, top_k=st.one_of(st.none(), st.integers(-2, 1002)))
def test_classify_answers_a_result_or_invalid_argument(server, stub, images, top_k):
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images)
    if top_k is not None:
        request.top_k = top_k
    try:
        response = stub.Classify(request, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code()}: {exc.details()}"
        assert exc.details()
    else:
        assert len(response.results) == len(images)
        # A top_k above the model's classes returns every class (docs/server.md).
        classes = (
            stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER)).versions[0].metadata.num_classes
        )
        assert all(len(r.predictions) == min(top_k or 5, classes) for r in response.results)
        for result in response.results:
            assert all(0.0 <= p.score <= 1.0 for p in result.predictions)
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

"""Every kind of odd or hostile image gets either a correct result or INVALID_ARGUMENT naming it,
and the server keeps serving."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.conftest import CLASSIFIER, FEATURES
from tests.images import encode, photo, png_claiming_size

CAT = photo("chelsea")


@pytest.fixture(scope="module")
def stub(real_stub):
    """Real versions: the decoding of odd images is TensorFlow's (the signatures' decode_image)."""
    return real_stub


# The in-process server's Pillow warns about the garbage EXIF block on purpose; the test checks the answer.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")


def features(stub, images) -> np.ndarray:
    response = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=images), timeout=60
    )
    return np.array([f.values for f in response.features], np.float32)


def classify(stub, images):
    return stub.Classify(pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images), timeout=60)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(autouse=True)
def still_serving(stub):
    yield
    assert classify(stub, [encode(CAT)]).model.version == 1


def png16_rgb(pixels8: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    data = pixels8.astype(">u2") * 257
    height, width, _ = data.shape
    raw = b"".join(b"\x00" + data[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def animated_gif(first: np.ndarray, second: np.ndarray) -> bytes:
    frames = [Image.fromarray(first).convert("P"), Image.fromarray(second).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg(upright: np.ndarray) -> bytes:
    """Pixels stored rotated 90 degrees counter-clockwise, with EXIF orientation 6 (display: rotate
    90 clockwise), so that a viewer shows ``upright``."""
    stored = Image.fromarray(np.rot90(upright, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def jpeg_with_unreadable_exif(pixels: np.ndarray) -> bytes:
    """A JPEG whose EXIF block is garbage after its header: the pixels decode; the orientation is unknown."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0garbage")
    return buffer.getvalue()


VALID = {
    "JPEG with unreadable EXIF": lambda: jpeg_with_unreadable_exif(CAT),
    "grayscale PNG": lambda: encode(Image.fromarray(CAT).convert("L")),
    "grayscale JPEG": lambda: encode(Image.fromarray(CAT).convert("L"), "JPEG"),
    "RGBA PNG": lambda: encode(Image.fromarray(CAT).convert("RGBA")),
    "palette PNG": lambda: encode(Image.fromarray(CAT).convert("P")),
    "CMYK JPEG": lambda: encode(Image.fromarray(CAT).convert("CMYK"), "JPEG"),
    "16-bit RGB PNG": lambda: png16_rgb(CAT),
    "16-bit grayscale PNG": lambda: encode(
        Image.fromarray(CAT[..., 0].astype(np.uint16) * 257).convert("I;16")
    ),
    "BMP": lambda: encode(CAT, "BMP"),
    "WebP": lambda: encode(CAT, "WEBP", lossless=True),
    "animated GIF": lambda: animated_gif(CAT, 255 - CAT),
    "1x1 PNG": lambda: encode(np.full((1, 1, 3), 200, np.uint8)),
    "1x3000 PNG": lambda: encode(np.full((1, 3000, 3), 90, np.uint8)),
    "3000x1 JPEG": lambda: encode(np.full((3000, 1, 3), 90, np.uint8), "JPEG"),
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_unusual_but_valid_images_are_classified(stub, kind):
    response = classify(stub, [encode(CAT), VALID[kind]()])
    assert len(response.results) == 2 and len(response.results[1].predictions) == 5


def test_sixteen_bit_and_cmyk_decode_to_the_same_picture(stub):
    reference = features(stub, [encode(CAT)])[0]
    for kind in ("16-bit RGB PNG", "CMYK JPEG"):
        assert cosine(features(stub, [VALID[kind]()])[0], reference) > 0.999, kind


def test_an_animated_gif_is_its_first_frame(stub):
    gif_features = features(stub, [animated_gif(CAT, 255 - CAT)])[0]
    first_frame = Image.open(io.BytesIO(animated_gif(CAT, 255 - CAT))).convert("RGB")
    np.testing.assert_allclose(
        gif_features, features(stub, [encode(np.asarray(first_frame))])[0], rtol=1e-4, atol=1e-5
    )


def test_exif_rotated_jpeg_is_classified_upright(stub):
    rotated = exif_rotated_jpeg(CAT)
    upright, as_served, as_stored = features(
        stub, [encode(CAT, "JPEG", quality=95), rotated, encode(np.rot90(CAT, k=1), "JPEG", quality=95)]
    )
    assert cosine(as_served, upright) > 0.99
    assert cosine(as_served, upright) > cosine(as_stored, upright) + 0.005


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


INVALID = {
    "empty": (lambda: b"", "empty image"),
    "random bytes": (
        lambda: np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "not a recognised image",
    ),
    "truncated JPEG": (lambda: truncated(encode(CAT, "JPEG"), 0.4), "could not decode"),
    "truncated PNG": (lambda: truncated(encode(CAT), 0.4), "could not decode"),
    "PNG header only": (lambda: encode(CAT)[:40], ""),
    "text file": (lambda: b"name,score\ncat,0.9\n" * 20, "text, not an image"),
    "PDF": (lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "a PDF document"),
    "decompression bomb": (lambda: png_claiming_size(50_000, 50_000), "decodes at most"),
    "TIFF": (lambda: encode(CAT, "TIFF"), "TIFF images are not supported"),
}


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_unusable_images_are_invalid_argument_naming_the_index(stub, kind):
    make, fragment = INVALID[kind]
    with pytest.raises(grpc.RpcError) as caught:
        classify(stub, [encode(CAT), encode(CAT), make()])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("image 2: "), caught.value.details()
    assert fragment in caught.value.details()


def test_more_images_than_the_maximum(stub):
    with pytest.raises(grpc.RpcError) as caught:
        classify(stub, [encode(np.zeros((4, 4, 3), np.uint8))] * 65)
    assert (
        caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "maximum is 64" in caught.value.details()
    )


def test_a_bad_image_does_not_fail_other_callers_in_the_same_batch(stub):
    from concurrent.futures import ThreadPoolExecutor

    bad = truncated(encode(CAT, "JPEG"), 0.5)  # passes the header check, fails in the decoder
    good = encode(CAT)

    def call(images):
        try:
            return classify(stub, images)
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, [[good], [good, bad], [good]] * 8))
    for i, answer in enumerate(answers):
        if i % 3 == 1:
            assert isinstance(answer, grpc.RpcError) and answer.details().startswith(
                "image 1: could not decode"
            )
        else:
            assert not isinstance(answer, grpc.RpcError), answer

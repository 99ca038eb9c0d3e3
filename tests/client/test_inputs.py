"""Every accepted input type gives what sending the encoded bytes yourself gives."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.answers import assert_same_features
from tests.client.conftest import CLASSIFIER, FEATURES
from tests.conftest import REPO_ROOT
from tests.images import decode_rgb, encode


def features(client, images, model=CLASSIFIER):
    return client.extract_features(images, model).features


def assert_same_answer(client, image, reference_bytes):
    """One image, alone in its request, answers exactly as its reference bytes do."""
    got, expected = features(client, image), features(client, reference_bytes)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    top, expected_top = (
        client.classify(image, CLASSIFIER, top_k=5),
        client.classify(reference_bytes, CLASSIFIER, top_k=5),
    )
    assert [p.class_id for p in top[0]] == [p.class_id for p in expected_top[0]]
    np.testing.assert_allclose([p.score for p in top[0]], [p.score for p in expected_top[0]], rtol=1e-6)


@pytest.fixture(scope="module")
def coffee(photos):
    return decode_rgb(photos["coffee.png"])


@pytest.mark.parametrize("kind", ["str", "path"])
def test_file_paths_send_the_file(client, photos, tmp_path, kind):
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(photos["chelsea.jpg"])
    assert_same_answer(client, str(path) if kind == "str" else path, photos["chelsea.jpg"])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_byte_buffers_are_sent_as_they_are(client, photos, wrap):
    assert_same_answer(client, wrap(photos["coffee.jpg"]), photos["coffee.jpg"])


def test_uint8_rgb_array_is_png_encoded(client, coffee):
    assert_same_answer(client, coffee, encode(coffee, "PNG"))


def test_non_contiguous_array(client, coffee):
    view = coffee[::2, ::3]
    assert not view.flags.c_contiguous
    assert_same_answer(client, view, encode(np.ascontiguousarray(view), "PNG"))


def test_pil_image_is_png_encoded(client, photos, coffee):
    image = Image.open(io.BytesIO(photos["coffee.jpg"]))
    assert_same_answer(client, image, encode(np.asarray(image.convert("RGB")), "PNG"))


def test_grayscale_array_is_replicated_to_rgb_by_the_server(client, coffee):
    gray = coffee.mean(axis=2).round().astype(np.uint8)
    assert_same_answer(client, gray, encode(gray, "PNG"))
    assert_same_answer(client, gray[:, :, None], encode(gray, "PNG"))
    assert_same_answer(client, gray, encode(np.stack([gray] * 3, axis=2), "PNG"))


def test_rgba_array_keeps_alpha_which_the_server_ignores(client, coffee):
    alpha = np.linspace(0, 255, coffee.shape[1]).astype(np.uint8)[None, :].repeat(coffee.shape[0], axis=0)
    rgba = np.dstack([coffee, alpha])
    assert_same_answer(client, rgba, encode(rgba, "PNG"))
    assert_same_answer(client, rgba, encode(coffee, "PNG"))


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK"])
def test_other_pil_modes_become_rgb(client, coffee, mode):
    image = Image.fromarray(coffee).convert(mode)
    expected = image.convert("RGBA" if mode == "LA" else "RGB")
    assert_same_answer(client, image, encode(expected, "PNG"))


def test_a_list_mixing_every_type_keeps_its_order(client, photos, coffee, tmp_path):
    path = tmp_path / "chelsea.png"
    path.write_bytes(photos["chelsea.png"])
    images = [
        path,
        coffee,
        photos["chelsea.png"],
        Image.fromarray(coffee),
        str(path),
        memoryview(encode(coffee)),
    ]
    got = features(client, images, FEATURES)
    reference = [photos["chelsea.png"], encode(coffee)] * 3
    expected = np.concatenate([features(client, data, FEATURES) for data in reference])
    assert got.shape == (6, 512) and got.dtype == np.float32
    # Batched and single-image convolutions round differently (~1e-7 relative).
    assert_same_features(got, expected)


def test_a_4d_array_is_a_batch(client, coffee):
    batch = np.stack([coffee, coffee[::-1]])
    got = features(client, batch, FEATURES)
    expected = features(client, [encode(coffee), encode(np.ascontiguousarray(coffee[::-1]))], FEATURES)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "bad, error, fragment",
    [
        ({"not": "an image"}, TypeError, "image 1: got dict"),
        (np.zeros((8, 8, 3), np.float32), ValueError, "image 1: a float32 array; pass uint8 pixels"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, "image 1: an array of shape (8, 8, 2)"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "has no pixels"),
    ],
    ids=["dict", "float", "two-channels", "empty-array"],
)
def test_unusable_inputs_are_refused_before_sending(client, photos, bad, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        client.classify([photos["chelsea.png"], bad], CLASSIFIER)


def test_no_images_is_refused(client):
    with pytest.raises(ValueError, match="no images"):
        client.classify([], CLASSIFIER)


def test_missing_file_names_the_path(client, tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        client.classify(tmp_path / "missing.jpg", CLASSIFIER)
    assert caught.value.filename == str(tmp_path / "missing.jpg")


def test_importing_the_client_does_not_import_tensorflow():
    code = (
        "import sys, client, client.cli; "
        "heavy = ('tensorflow', 'keras', 'server', 'exporter'); "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The contract of a loaded version (:class:`server.backend.ModelBackend`), asserted alike on the NumPy
fake the core's tests run on and on a real exported version (TensorFlow, and its ONNX twin on ONNX
Runtime): the fake cannot drift from what the core really gets."""

from __future__ import annotations

import numpy as np
import pytest

from model_format import signatures as sig
from tests.answers import assert_same_features, assert_same_probabilities
from tests.images import decode_rgb, encode

IMPLEMENTATIONS = ["fake", "tensorflow", "onnxruntime"]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def backend(request, tmp_path_factory):
    """A classifier version loaded by one implementation; closed at the end."""
    if request.param == "fake":
        from tests.fake_backend import fake_loader, write_fake_version

        path = write_fake_version(tmp_path_factory.mktemp("fake"), "contract", 1, num_classes=10)
        model = fake_loader("contract", 1, path)
    else:
        from server.model import load_saved_model
        from server.runtime import RuntimeOptions

        # The live classifier: random weights whose answers still depend on the image.
        export = request.getfixturevalue("live_classifier_export")
        options = RuntimeOptions(runtime=request.param, cache_dir=tmp_path_factory.mktemp("onnx-cache"))
        model = load_saved_model("contract", 1, export.path, options)
        assert model.runtime == request.param, model.runtime_detail
    yield model
    model.close()


@pytest.fixture(scope="module")
def images(photos):
    """Two different photos and one more of the first, as PNG and JPEG."""
    return [photos["chelsea.png"], photos["coffee.jpg"], photos["chelsea.png"]]


def test_metadata_names_what_the_version_has(backend):
    metadata = backend.metadata
    assert metadata.input_size >= 8 and metadata.feature_dim >= 1
    assert metadata.num_classes == len(metadata.labels) >= 2
    names = set(backend.signature_names)
    assert {sig.CLASSIFY, sig.CLASSIFY_PIXELS, sig.FEATURES, sig.FEATURES_PIXELS, sig.DEFAULT} <= names
    assert backend.has("classify") and backend.has("features")
    assert backend.kind_of(sig.DEFAULT) == "classify" and backend.kind_of(sig.FEATURES_PIXELS) == "features"
    assert backend.kind_of("no_such_signature") is None
    assert isinstance(backend.runtime, str) and isinstance(backend.runtime_detail, str)
    assert backend.runtime_of("features") in ("tensorflow", "onnxruntime", "fake")
    assert isinstance(backend.resident_bytes, int) and backend.resident_bytes >= 0


@pytest.mark.parametrize("kind", ["classify", "features"])
def test_rows_depend_on_the_image_and_not_on_the_batch(backend, images, kind):
    outcome = backend.run(kind, images)
    assert not outcome.errors
    width = backend.metadata.num_classes if kind == "classify" else backend.metadata.feature_dim
    assert outcome.outputs.shape == (3, width) and outcome.outputs.dtype == np.float32
    same = assert_same_probabilities if kind == "classify" else assert_same_features
    same(outcome.outputs[2], outcome.outputs[0])  # the same photo, elsewhere in the batch
    same(outcome.outputs[1:2], backend.run(kind, images[1:2]).outputs)  # alone
    assert np.abs(outcome.outputs[0] - outcome.outputs[1]).max() > 1e-3 * np.abs(outcome.outputs).max()
    if kind == "classify":
        np.testing.assert_allclose(outcome.outputs.sum(axis=1), 1.0, atol=1e-3)


def test_an_undecodable_image_fails_alone_with_its_index(backend, images):
    outcome = backend.run("features", [images[0], b"this is not an image", images[1]])
    assert list(outcome.errors) == [1] and outcome.errors[1].startswith("could not decode")
    assert_same_features(outcome.outputs[[0, 2]], backend.run("features", [images[0], images[1]]).outputs)


@pytest.mark.parametrize("kind", ["classify", "features"])
def test_pixel_signatures_answer_as_the_encoded_image(backend, photos, kind):
    pixels = decode_rgb(photos["coffee.png"])[::4, ::4]
    by_pixels = backend.call_signature(f"{kind}_pixels", {sig.PIXELS_INPUT: pixels[None]})
    by_images = backend.call_signature(kind, {sig.IMAGES_INPUT: np.array([encode(pixels)], dtype=object)})
    output = sig.PROBABILITIES_OUTPUT if kind == "classify" else sig.FEATURES_OUTPUT
    assert set(by_pixels) == set(by_images) == {output}
    same = assert_same_probabilities if kind == "classify" else assert_same_features
    same(by_pixels[output], by_images[output])
    same(by_images[output], backend.run(kind, [encode(pixels)]).outputs)


def test_signature_defs_describe_every_signature(backend):
    defs = backend.signature_defs
    assert set(backend.signature_names) <= set(defs)
    for name in backend.signature_names:
        inputs, outputs = set(defs[name].inputs), set(defs[name].outputs)
        assert inputs == {sig.PIXELS_INPUT if name.endswith("_pixels") else sig.IMAGES_INPUT}, name
        kind = backend.kind_of(name)
        assert outputs == {sig.PROBABILITIES_OUTPUT if kind == "classify" else sig.FEATURES_OUTPUT}, name

"""The exported signatures compute what the reference pipeline computes, for every catalog entry.

Reference, for the same weights: PIL decode -> ``tf.image.resize`` (bilinear, as the tutorial's TF Hub
example) -> the family's own ``keras.applications.<family>.preprocess_input`` -> ``model.predict``.
Features are compared (random-weight probabilities are near-uniform and would hide mistakes).

Error measure: ``max|exported - reference| / max|reference|`` over the feature vector (an element-wise
relative error is meaningless for the many features near zero).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from exporter.catalog import CATALOG
from exporter.preprocessing import MODES, PreprocessingMode
from graphs.signatures import ServingModule
from tests.exporter.conftest import HUB_SIZE
from tests.images import decode_rgb

# Six catalog networks against their reference pipelines: the slow tier's.
pytestmark = pytest.mark.slow

# Small input sizes keep the suite fast. Random-weight MobileNetV2 features nearly collapse (~1e-12); at
# 96x96 the JPEG decoder differences stay inside the tolerance (measured here: max 0.017 at 96; 0.020 at 128).
KERAS_CASES = {
    "vgg16": 32,
    "mobilenet_v2_keras": 96,
    "resnet50": 32,
    "efficientnet_b0": 32,
    "mobilenet_v3_small": 32,
    "densenet121": 32,
}
SEED = 7
PNG_TOLERANCE = 1e-4
JPEG_TOLERANCE = 2e-2
JPEG_MIN_COSINE = 0.999


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def resized_reference_input(data: bytes, size: int) -> np.ndarray:
    return tf.image.resize(decode_rgb(data)[None], [size, size], method="bilinear").numpy()


class KerasReference:
    """The tutorial's pipeline with the exported model's weights, built independently of the exporter."""

    def __init__(self, name: str, size: int, full_model) -> None:
        import keras

        entry = CATALOG[name]
        self.size = size
        self.preprocess_input = getattr(keras.applications, entry.keras_module).preprocess_input
        constructor = getattr(keras.applications, entry.keras_application)
        # include_top=False, pooling="avg" is Keras' own definition of "GAP of the last conv features".
        self.headless = constructor(
            weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3)
        )
        self.headless.set_weights(full_model.get_weights()[: len(self.headless.weights)])
        self.full = full_model

    def _input(self, data: bytes) -> np.ndarray:
        return self.preprocess_input(resized_reference_input(data, self.size).copy())

    def features(self, data: bytes) -> np.ndarray:
        return self.headless.predict(self._input(data), verbose=0)[0]

    def probabilities(self, data: bytes) -> np.ndarray:
        return self.full.predict(self._input(data), verbose=0)[0]


@pytest.fixture(scope="module")
def keras_references(export_cache):
    """name -> (export result, its reference pipeline), built once per name (the mutants reuse them)."""
    built: dict[str, tuple] = {}

    def get(name: str):
        if name not in built:
            size = KERAS_CASES[name]
            result = export_cache.get(name, weights="random", input_size=size, seed=SEED)
            built[name] = result, KerasReference(name, size, result.network.keras_model)
        return built[name]

    return get


@pytest.fixture(params=sorted(KERAS_CASES))
def keras_case(request, keras_references):
    name = request.param
    result, reference = keras_references(name)
    # The exporter's own verified reload of the published version (loading it again costs seconds).
    return name, result.loaded, reference


def assert_reference_is_informative(reference, photos) -> None:
    chelsea, coffee = reference.features(photos["chelsea.png"]), reference.features(photos["coffee.png"])
    assert relative_error(chelsea, coffee) > 1e-2, "reference features do not tell two photos apart"


def assert_faithful(signatures, reference, photos) -> None:
    for name, data in photos.items():
        expected = reference.features(data)
        got = signatures["features"](images=tf.constant([data]))["features"].numpy()[0]
        if name.endswith(".png"):
            assert relative_error(got, expected) <= PNG_TOLERANCE, name
        else:
            assert relative_error(got, expected) <= JPEG_TOLERANCE, name
            assert cosine(got, expected) >= JPEG_MIN_COSINE, name
        if name.endswith(".png"):  # the uint8 input, fed the decoded pixels of the same photo
            pixels = tf.constant(decode_rgb(data)[None])
            got_pixels = signatures["features_pixels"](pixels=pixels)["features"].numpy()[0]
            assert relative_error(got_pixels, expected) <= PNG_TOLERANCE, f"{name} as uint8"


def test_keras_entry_matches_reference_pipeline(keras_case, photos):
    name, loaded, reference = keras_case
    assert_reference_is_informative(reference, photos)
    assert_faithful(loaded.signatures, reference, photos)
    probabilities = loaded.signatures["classify"](images=tf.constant([photos["chelsea.png"]]))[
        "probabilities"
    ]
    np.testing.assert_allclose(
        probabilities.numpy()[0], reference.probabilities(photos["chelsea.png"]), atol=1e-5
    )
    assert set(loaded.signatures) == {
        "serving_default",
        "classify",
        "classify_pixels",
        "features",
        "features_pixels",
    }


def test_hub_entry_matches_reference_pipeline(export_cache, hub_handles, photos):
    paths, classifier, extractor = hub_handles
    result = export_cache.get(
        "mobilenet_v2",
        hub_handle=str(paths["classification"]),
        hub_feature_handle=str(paths["feature_vector"]),
        input_size=HUB_SIZE,
    )
    loaded = result.loaded  # the exporter's verified reload of the published version

    class HubReference:  # the tutorial's TF Hub example: resize, scale to [0, 1]
        def features(self, data: bytes) -> np.ndarray:
            return extractor.predict(resized_reference_input(data, HUB_SIZE) / 255.0, verbose=0)[0]

    assert_reference_is_informative(HubReference(), photos)
    assert_faithful(loaded.signatures, HubReference(), photos)
    logits = classifier.predict(resized_reference_input(photos["chelsea.png"], HUB_SIZE) / 255.0, verbose=0)[
        0
    ]
    probabilities = loaded.signatures["classify"](images=tf.constant([photos["chelsea.png"]]))[
        "probabilities"
    ]
    np.testing.assert_allclose(probabilities.numpy()[0], tf.nn.softmax(logits).numpy(), atol=1e-6)
    assert result.manifest["num_classes"] == 1001 and result.manifest["preprocessing"] == "unit"
    assert (result.path / "assets" / "labels.txt").read_text().splitlines()[0] == "background"


# A wrong channel order, scale or mean must break fidelity: each mutant replaces one family's
# preprocessing and must exceed the tolerance the real exports meet.
MUTANTS = {
    "caffe without RGB->BGR": ("vgg16", lambda x: x - tf.constant([103.939, 116.779, 123.68])),
    "caffe without mean subtraction": ("vgg16", lambda x: x[..., ::-1]),
    "tf mode scaled to [0, 1]": ("mobilenet_v2_keras", lambda x: x / 255.0),
    "torch mode with caffe means": (
        "densenet121",
        lambda x: x[..., ::-1] - tf.constant([103.939, 116.779, 123.68]),
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_wrong_preprocessing_fails_fidelity(mutant, keras_references, photos):
    name, wrong = MUTANTS[mutant]
    size = KERAS_CASES[name]
    result, reference = keras_references(name)
    features_model = result.network.trackables["feature_network"]
    assert MODES[CATALOG[name].preprocessing].fn is not wrong
    mutated = PreprocessingMode("mutant", mutant, wrong)
    module = ServingModule(
        size,
        None,
        lambda pixels: features_model(mutated.fn(pixels), training=False),
        None,
        {"net": features_model},
    )
    assert_reference_is_informative(reference, photos)
    with pytest.raises(AssertionError):
        assert_faithful(module.signature_map, reference, photos)

"""The serving functions written into every SavedModel: bytes or pixels in, probabilities or features out.

Signatures (all batch-first; their names are in :mod:`model_format.signatures`, with the table).

Encoded images may be JPEG, PNG, GIF (first frame), BMP or WebP; grayscale and RGBA become RGB.
Every image is resized to the model's input size with bilinear ``tf.image.resize`` (as in the
tutorial's TF Hub example) and normalised with the family's preprocessing.

Besides the signatures the module keeps two plain functions on resized float pixels, ``embed`` and
``predict``, so that a fine-tuned head can be composed onto an exported base without re-exporting it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from model_format.signatures import (  # noqa: F401 - the names, re-exported beside the code that builds them
    CLASSIFY,
    CLASSIFY_PIXELS,
    DEFAULT,
    FEATURES,
    FEATURES_OUTPUT,
    FEATURES_PIXELS,
    IMAGES_INPUT,
    LABELS_ASSET,
    PIXELS_INPUT,
    PROBABILITIES_OUTPUT,
)


def decode_image(data: tf.Tensor, size: int) -> tf.Tensor:
    """Decode one encoded image to float32 ``[size, size, 3]`` in [0, 255]."""
    # NOTE: TensorFlow's default JPEG IDCT is libjpeg's fast integer one; the accurate one decodes
    # bit-identically to Pillow (and so to Keras' load_img), which the fidelity test relies on.
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8),
    )
    image.set_shape([None, None, 3])
    return tf.image.resize(image, [size, size], method="bilinear")


def decode_images(images: tf.Tensor, size: int) -> tf.Tensor:
    """Decode a batch of encoded images to float32 ``[N, size, size, 3]`` in [0, 255]."""
    return tf.map_fn(
        lambda data: decode_image(data, size),
        images,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        parallel_iterations=16,
    )


def _variables_if_keras(trackable: Any) -> Any:
    """A Keras layer or model's variables (all of them: trainable, frozen and statistics); else as is."""
    import keras

    if isinstance(trackable, keras.Layer):
        return list(trackable.variables)
    return trackable


def resize_pixels(pixels: tf.Tensor, size: int) -> tf.Tensor:
    """Resize a uint8 batch ``[N, H, W, 3]`` to float32 ``[N, size, size, 3]`` in [0, 255]."""
    return tf.image.resize(pixels, [size, size], method="bilinear")


class ServingModule(tf.Module):
    """Wraps a network's ``classify``/``features`` callables in the serving signatures.

    Args:
        input_size: square side the network takes.
        classify: float32 pixels in [0, 255], ``[N, S, S, 3]`` -> probabilities; ``None`` if headless.
        features: same input -> ``[N, D]`` features; ``None`` if the model has none.
        labels_path: a file with one class name per line, stored as the ``labels.txt`` asset.
        trackables: objects holding the variables (Keras models, loaded Hub or base SavedModels).
            A Keras model is kept as its list of variables, as Keras' own ``ExportArchive`` does: its
            hundreds of layer objects would only make the SavedModel slower to write and to load
            (measured here, DenseNet121: write 30 s -> 19 s, load 11 s -> 6 s).
    """

    def __init__(
        self,
        input_size: int,
        classify: Callable[[tf.Tensor], tf.Tensor] | None,
        features: Callable[[tf.Tensor], tf.Tensor] | None,
        labels_path: str | None,
        trackables: dict[str, Any],
    ) -> None:
        super().__init__(name="serving")
        if classify is None and features is None:
            raise ValueError("a model needs a classifier, a feature extractor or both")
        for attribute, value in trackables.items():
            setattr(self, attribute, _variables_if_keras(value))
        self.labels_file = tf.saved_model.Asset(labels_path) if labels_path else None
        self.input_size = input_size
        size = input_size
        resized_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=PIXELS_INPUT)
        bytes_spec = tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)
        pixels_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS_INPUT)
        self._signatures: dict[str, Any] = {}

        if features is not None:
            self.embed = tf.function(features, input_signature=[resized_spec])
            embed = self.embed
            self.features = tf.function(
                lambda images: {FEATURES_OUTPUT: embed(decode_images(images, size))},
                input_signature=[bytes_spec],
            )
            self.features_pixels = tf.function(
                lambda pixels: {FEATURES_OUTPUT: embed(resize_pixels(pixels, size))},
                input_signature=[pixels_spec],
            )
            self._signatures[FEATURES] = self.features
            self._signatures[FEATURES_PIXELS] = self.features_pixels
        if classify is not None:
            self.predict = tf.function(classify, input_signature=[resized_spec])
            predict = self.predict
            self.classify = tf.function(
                lambda images: {PROBABILITIES_OUTPUT: predict(decode_images(images, size))},
                input_signature=[bytes_spec],
            )
            self.classify_pixels = tf.function(
                lambda pixels: {PROBABILITIES_OUTPUT: predict(resize_pixels(pixels, size))},
                input_signature=[pixels_spec],
            )
            self._signatures[CLASSIFY] = self.classify
            self._signatures[CLASSIFY_PIXELS] = self.classify_pixels
        self._signatures[DEFAULT] = self._signatures.get(CLASSIFY) or self._signatures[FEATURES]

    @property
    def signature_map(self) -> dict[str, Any]:
        """Signature name -> tf.function, as ``tf.saved_model.save(signatures=...)`` takes it."""
        return dict(self._signatures)


def describe_signatures(signature_names: list[str], num_classes: int | None, feature_dim: int | None) -> dict:
    """The manifest's description of each signature's inputs and outputs."""
    described = {}
    for name in signature_names:
        kind = name
        if name == DEFAULT:
            kind = CLASSIFY if CLASSIFY in signature_names else FEATURES
        takes_pixels = kind.endswith("_pixels")
        is_classifier = kind.startswith(CLASSIFY)
        inputs = (
            {PIXELS_INPUT: {"dtype": "uint8", "shape": [None, None, None, 3]}}
            if takes_pixels
            else {IMAGES_INPUT: {"dtype": "string", "shape": [None]}}
        )
        outputs = (
            {PROBABILITIES_OUTPUT: {"dtype": "float32", "shape": [None, num_classes]}}
            if is_classifier
            else {FEATURES_OUTPUT: {"dtype": "float32", "shape": [None, feature_dim]}}
        )
        described[name] = {"inputs": inputs, "outputs": outputs}
    return described

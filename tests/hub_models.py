"""Hub-format SavedModels built locally, loaded through ``tensorflow_hub`` exactly as a real handle.

A TF2 Hub image model is a SavedModel whose object is callable on float32 ``[N, S, S, 3]`` pixels in
[0, 1]: the classifier returns logits (1001, ``background`` first), the feature-vector twin returns
``[N, D]``. These mimic ``mobilenet_v2_100_224/classification/4`` and ``feature_vector/4`` with a
small random-weight MobileNetV2.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


def save_hub_models(directory: Path, size: int, seed: int = 3, batchnorm_seed: int | None = None):
    """Write ``classification/`` and ``feature_vector/`` under ``directory``; return the Keras twins.

    ``batchnorm_seed``: randomise the BatchNorm statistics (tests/runtime/varied.py) so outputs vary.
    """
    import keras

    keras.utils.set_random_seed(seed)
    classifier = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(size, size, 3), classes=1001, classifier_activation=None
    )
    extractor = keras.Model(
        classifier.inputs, keras.layers.GlobalAveragePooling2D()(classifier.get_layer("out_relu").output)
    )

    if batchnorm_seed is not None:
        from tests.server.runtime.varied import randomise_batchnorm

        randomise_batchnorm(classifier, batchnorm_seed)

    def hub_module(model) -> tf.Module:
        module = tf.Module()
        module.model = model
        module.__call__ = tf.function(
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )
        return module

    paths = {}
    for kind, model in (("classification", classifier), ("feature_vector", extractor)):
        paths[kind] = directory / kind
        tf.saved_model.save(hub_module(model), str(paths[kind]))
    return paths, classifier, extractor

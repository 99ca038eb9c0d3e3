"""Server tests use the shared fixture chain of tests/conftest.py: exported models -> model_root ->
server (in-process, free port) -> channel -> stub."""

from __future__ import annotations

import pytest

from tests.conftest import CLASSIFIER, CLASSIFIER_EXPORT, FEATURES


@pytest.fixture(scope="session")
def live_classifier_export(export_cache, tmp_path_factory):
    """The small classifier of CLASSIFIER_EXPORT with its last layer scaled so that its answers depend
    on the image. NOTE: with random weights MobileNetV2's pooled features are ~1e-11, so the plain
    export answers 1/1000 for every class of every image, and equal top-5s across APIs prove nothing."""
    import keras

    keras.utils.set_random_seed(CLASSIFIER_EXPORT["seed"])
    size = CLASSIFIER_EXPORT["input_size"]
    model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1e11, bias])
    path = tmp_path_factory.mktemp("live-weights") / "live.weights.h5"
    model.save_weights(str(path))
    return export_cache.get(
        "mobilenet_v2_keras", weights=str(path), input_size=size, seed=CLASSIFIER_EXPORT["seed"]
    )


@pytest.fixture(scope="module")
def live_model_root(tmp_path_factory, live_classifier_export, features_export):
    """Like ``model_root``, with the live classifier served as CLASSIFIER."""
    from tests.servers import copy_version

    root = tmp_path_factory.mktemp("live-model-root")
    copy_version(live_classifier_export.path, root, CLASSIFIER, 1)
    copy_version(features_export.path, root, FEATURES, 1)
    return root

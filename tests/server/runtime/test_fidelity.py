"""ONNX Runtime answers what TensorFlow answers, for every kind of version; and the fallback path.

Tolerances (docs/runtime.md, the twin check's own bounds): features within 1e-5 x max|feature| of
the image, the same top-5 classes, probabilities within 1e-5. Compared through a real server on the
fidelity corpus (two photos as JPEG, PNG, GIF, BMP and WebP).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

# The product's promise (docs/runtime.md), the bounds the twin's own check applies.
from graphs.onnx_twin import FEATURE_TOLERANCE, PROBABILITY_TOLERANCE
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.runtime.conftest import FEATURES_ONLY_TWIN, KINDS, TF_SUFFIX, UNCONVERTIBLE

# The session fixture exports and converts five versions and serves them twice (~2 min alone; much
# longer on a shared machine), hence the longer timeout of the first test's setup.
# Every kind of version on both runtimes, twins converted at load: the slow tier's.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def stub(runtime_server):
    with grpc.insecure_channel(runtime_server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


def features(stub, name, images) -> np.ndarray:
    response = stub.ExtractFeatures(pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=name), images=images))
    return np.array([list(vector.values) for vector in response.features], np.float32)


def top5(stub, name, images, classes: int) -> list[list[tuple[int, float]]]:
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=name), images=images, top_k=min(5, classes))
    response = stub.Classify(request)
    return [[(p.class_id, p.score) for p in result.predictions] for result in response.results]


def status(stub, name) -> pb.ModelVersionStatus:
    return stub.GetModelStatus(pb.GetModelStatusRequest(name=name)).versions[0]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_onnx_runtime_answers_like_tensorflow(stub, corpus, name):
    served, reference = status(stub, name), status(stub, name + TF_SUFFIX)
    assert (served.state, served.runtime) == (pb.ModelVersionStatus.AVAILABLE, "onnxruntime"), (
        served.runtime_detail
    )
    assert reference.runtime == "tensorflow"
    images = list(corpus.values())

    mine, theirs = features(stub, name, images), features(stub, name + TF_SUFFIX, images)
    error = np.abs(mine - theirs).max(axis=1) / np.abs(theirs).max(axis=1)
    assert error.max() <= FEATURE_TOLERANCE, dict(zip(corpus, error))

    if served.metadata.num_classes:
        classes = served.metadata.num_classes
        for image, a, b in zip(
            corpus, top5(stub, name, images, classes), top5(stub, name + TF_SUFFIX, images, classes)
        ):
            assert [c for c, _ in a] == [c for c, _ in b], image
            assert np.allclose([s for _, s in a], [s for _, s in b], rtol=0, atol=PROBABILITY_TOLERANCE), (
                image
            )


@pytest.mark.parametrize("name", ["mobilenet_v2_keras", "tuned"])
def test_one_image_per_request_answers_like_a_batch(stub, corpus, name):
    """A lone image takes the single-image decode and, on an idle server, the twin's session on every
    core (server/runtime.py): the same answers as in a batch and as TensorFlow."""
    images = list(corpus.values())
    reference = features(stub, name + TF_SUFFIX, images)
    for index, image in enumerate(images):
        for served in (name, name + TF_SUFFIX):
            alone = features(stub, served, [image])[0]
            error = np.abs(alone - reference[index]).max() / np.abs(reference[index]).max()
            assert error <= FEATURE_TOLERANCE, (served, list(corpus)[index], error)


def test_single_image_decode_gives_the_batch_pixels(corpus):
    import tensorflow as tf

    from server.runtime import tensorflow_preprocessing

    decode, _ = tensorflow_preprocessing(224)
    for image_name, image in corpus.items():
        alone = decode(tf.constant([image])).numpy()
        in_batch = decode(tf.constant([image, image])).numpy()[:1]
        assert np.array_equal(alone, in_batch), image_name


def test_lone_batches_get_every_core_unless_the_sessions_already_do(runtime_root):
    import os

    from graphs import onnx_twin
    from server.runtime import lone_batch_session
    from storage.local import read_manifest

    root, _base = runtime_root
    version = root / "hubnet" / "1"
    model = onnx_twin.read_twin(version, read_manifest(version)["onnx"])
    cores = os.cpu_count() or 1
    assert lone_batch_session(model, cores) is None
    if cores > 1:
        session = lone_batch_session(model, 1)
        assert session.get_session_options().intra_op_num_threads == cores


@pytest.mark.xfail(
    strict=True,
    reason="randomised BatchNorm statistics are not enough: features of these random-weight versions still "
    "differ between photos by only ~1e-5..1e-7 x max|feature| (measured 2026-12-01), so the comparison "
    "above is "
    "weaker than it should be; needs weights that make activations vary (e.g. real or partly trained "
    "weights)",
)
def test_the_compared_activations_vary_between_images(stub, corpus):
    theirs = features(stub, "mobilenet_v2_keras" + TF_SUFFIX, list(corpus.values()))
    assert np.abs(theirs - theirs.mean(axis=0)).max() > 1e-3 * np.abs(theirs).max()


def test_network_tf2onnx_cannot_convert_is_served_by_tensorflow(stub, corpus):
    served = status(stub, UNCONVERTIBLE)
    assert (served.state, served.runtime) == (pb.ModelVersionStatus.AVAILABLE, "tensorflow")
    assert "BesselI1e" in served.runtime_detail
    images = list(corpus.values())[:3]
    np.testing.assert_array_equal(
        features(stub, UNCONVERTIBLE, images), features(stub, UNCONVERTIBLE + TF_SUFFIX, images)
    )


def test_network_too_big_to_convert_whole_gets_a_features_only_twin(runtime_root, stub, corpus):
    """VGG16 with its head (the default vgg16): features on ONNX Runtime, classification on TensorFlow."""
    from server.finetune.trainer import FrozenBase
    from storage.local import read_manifest

    root, _base = runtime_root
    record = read_manifest(root / FEATURES_ONLY_TWIN / "1")["onnx"]
    assert record["outputs"] == ["features"], record
    assert record["left_out"].startswith("probabilities stay on TensorFlow: the network has 37.7 M")
    served = status(stub, FEATURES_ONLY_TWIN)
    assert (served.state, served.runtime) == (pb.ModelVersionStatus.AVAILABLE, "tensorflow")
    assert served.runtime_detail.startswith("features on onnxruntime, classify on tensorflow"), (
        served.runtime_detail
    )
    images = list(corpus.values())
    reference = features(stub, FEATURES_ONLY_TWIN + TF_SUFFIX, images)
    assert np.abs(reference - reference.mean(axis=0)).max() > 1e-3 * np.abs(reference).max()
    error = np.abs(features(stub, FEATURES_ONLY_TWIN, images) - reference).max(axis=1)
    assert (error / np.abs(reference).max(axis=1)).max() <= FEATURE_TOLERANCE
    assert top5(stub, FEATURES_ONLY_TWIN, images, 1000) == top5(
        stub, FEATURES_ONLY_TWIN + TF_SUFFIX, images, 1000
    )
    base = FrozenBase(str(root / FEATURES_ONLY_TWIN / "1"), 32)
    assert base.runtime == "onnxruntime"  # fine-tuning on the default vgg16 extracts on the twin
    np.testing.assert_allclose(
        base.features(images), reference, rtol=0, atol=FEATURE_TOLERANCE * float(np.abs(reference).max())
    )


def test_version_without_twin_is_converted_at_load_then_cached(runtime_root, runtime_server, stub):
    from server.model import LoadedModel
    from server.runtime import RuntimeOptions, cache_dir_for

    assert "converted at load" in status(stub, "tuned").runtime_detail
    assert "converted at load" in status(stub, "efficientnet_b0").runtime_detail
    assert "exported with the version" in status(stub, "mobilenet_v2_keras").runtime_detail
    root, _base = runtime_root
    cache = cache_dir_for(runtime_server.settings.state_dir)
    again = LoadedModel.load(
        "tuned", 1, root / "tuned" / "1", RuntimeOptions(runtime="onnxruntime", cache_dir=cache)
    )
    assert again.runtime == "onnxruntime"
    assert "from the cache" in again.runtime_detail


def test_fine_tuning_extracts_features_on_the_twin(runtime_root, stub, corpus):
    _root, base = runtime_root
    images = list(corpus.values())
    assert base.runtime == "onnxruntime"
    np.testing.assert_allclose(
        base.features(images),
        features(stub, "hubnet" + TF_SUFFIX, images),
        rtol=0,
        atol=FEATURE_TOLERANCE * float(np.abs(features(stub, "hubnet" + TF_SUFFIX, images)).max()),
    )


def test_auto_keeps_the_faster_runtime_and_reports_both_timings(runtime_root):
    from server.model import LoadedModel
    from server.runtime import RuntimeOptions

    root, _base = runtime_root
    model = LoadedModel.load(
        "efficientnet_b0", 1, root / "efficientnet_b0" / "1", RuntimeOptions(runtime="auto")
    )
    detail = model.runtime_detail
    assert detail.startswith("auto: warm-up batch of 8: onnxruntime") and "tensorflow" in detail
    onnx_ms, tf_ms = (float(part.split()[-2]) for part in detail.split(";")[0].split(":", 2)[2].split(","))
    assert model.runtime == ("onnxruntime" if onnx_ms <= tf_ms else "tensorflow")


def test_runtime_setting_is_checked_and_overridable():
    from server.settings import ModelConfig, ServerSettings, SettingsError

    with pytest.raises(SettingsError, match="runtime must be one of auto, tensorflow, onnxruntime, openvino"):
        ServerSettings(runtime="tvm")
    with pytest.raises(SettingsError, match="runtime 'tf'"):
        ModelConfig(runtime="tf")
    settings = ServerSettings(runtime="onnxruntime", models={"a": ModelConfig(runtime="tensorflow")})
    assert (settings.runtime_for("a"), settings.runtime_for("b")) == ("tensorflow", "onnxruntime")


def test_exporter_records_the_twin_or_why_there_is_none(runtime_root):
    from graphs.onnx_twin import sha256_of
    from storage.local import read_manifest

    root, _base = runtime_root
    version = root / "mobilenet_v2_keras" / "1"
    record = read_manifest(version)["onnx"]
    assert record["sha256"] == sha256_of((version / record["file"]).read_bytes())
    assert record["opset"] == 17 and set(record["tools"]) == {"tf2onnx", "onnx", "onnxruntime", "tensorflow"}
    assert record["check"]["max_feature_error"] <= FEATURE_TOLERANCE and record["check"]["top5_identical"]
    assert "BesselI1e" in read_manifest(root / UNCONVERTIBLE / "1")["onnx"]["error"]

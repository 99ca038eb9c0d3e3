"""EfficientNet-Lite0 with its real ImageNet weights, served: real photos get the right kind of class,
and the served probabilities are the Keras model's own on the same pixels, on ONNX Runtime (the
version's exported twin) and on TensorFlow alike."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.settings import ModelConfig
from tests.answers import assert_same_probabilities
from tests.images import LABELLED_PHOTOS, decode_rgb, encode, labelled_photo
from tests.servers import InProcessServer, copy_version, test_settings

# EfficientNet-Lite0 at 224 with its real weights, on both runtimes: the slow tier's.
pytestmark = pytest.mark.slow

MODEL = "efficientnet_lite0"
MODEL_ON_TF = "efficientnet_lite0_tf"  # the same version, served by TensorFlow


@pytest.fixture(scope="module")
def lite_root(tmp_path_factory, lite0_export):
    root = tmp_path_factory.mktemp("lite-root")
    copy_version(lite0_export.path, root, MODEL, 1)
    copy_version(lite0_export.path, root, MODEL_ON_TF, 1)
    return root


@pytest.fixture(scope="module")
def lite_stub(lite_root):
    runtimes = {MODEL: ModelConfig(runtime="onnxruntime"), MODEL_ON_TF: ModelConfig(runtime="tensorflow")}
    running = InProcessServer(test_settings(lite_root, models=runtimes)).start()
    with grpc.insecure_channel(running.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)
    running.stop()


@pytest.fixture(scope="module")
def labelled_pngs() -> dict[str, bytes]:
    return {name: encode(labelled_photo(name), "PNG") for name in LABELLED_PHOTOS}


def test_real_photos_get_the_right_kind_of_class(lite_stub, labelled_pngs, photos):
    names = [*labelled_pngs, "chelsea.jpg"]
    images = [*labelled_pngs.values(), photos["chelsea.jpg"]]
    response = lite_stub.Classify(pb.ClassifyRequest(model=pb.ModelSpec(name=MODEL), images=images, top_k=3))
    assert (response.model.name, response.model.version) == (MODEL, 1)
    for name, result in zip(names, response.results, strict=True):
        top = result.predictions[0]
        print(f"{name}: {[(p.class_id, p.label, round(p.score, 3)) for p in result.predictions]}")
        assert top.class_id in LABELLED_PHOTOS[name.split(".")[0]], f"{name}: {top.class_id} {top.label}"
    cat = response.results[0].predictions[0]
    assert (cat.class_id, cat.label) == (285, "Egyptian_cat") and cat.score > 0.7


def test_served_probabilities_are_the_keras_models_own(lite_stub, labelled_pngs, lite0_export):
    model = lite0_export.network.keras_model  # the Keras model the export was traced from
    images = list(labelled_pngs.values())
    response = lite_stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=MODEL), images=images, top_k=1000)
    )
    for data, result in zip(images, response.results, strict=True):
        pixels = tf.image.resize(
            decode_rgb(data)[None].astype(np.float32), [224, 224], method="bilinear"
        ).numpy()
        expected = model.predict((pixels - 127.0) / 128.0, verbose=0)[0]
        served = np.zeros(1000, np.float32)
        for prediction in result.predictions:
            served[prediction.class_id] = prediction.score
        assert_same_probabilities(served, expected)
        assert int(np.argmax(served)) == int(np.argmax(expected))


def test_both_runtimes_give_the_same_top5_on_real_photos(lite_stub, labelled_pngs, photos):
    images = [*labelled_pngs.values(), photos["chelsea.jpg"], photos["coffee.png"]]
    answers = {}
    for name in (MODEL, MODEL_ON_TF):
        status = lite_stub.GetModelStatus(pb.GetModelStatusRequest(name=name), timeout=30)
        answers[status.versions[0].runtime] = lite_stub.Classify(
            pb.ClassifyRequest(model=pb.ModelSpec(name=name), images=images, top_k=5), timeout=120
        )
    assert set(answers) == {"onnxruntime", "tensorflow"}
    for on_ort, on_tf in zip(answers["onnxruntime"].results, answers["tensorflow"].results, strict=True):
        assert [p.class_id for p in on_ort.predictions] == [p.class_id for p in on_tf.predictions]
        assert_same_probabilities([p.score for p in on_ort.predictions], [p.score for p in on_tf.predictions])

"""Classify and ExtractFeatures through real gRPC stubs answer what the model itself answers: the
fake backend's own rows, and a real version's SavedModel signatures."""

from __future__ import annotations

import numpy as np
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from tests.answers import assert_same_features, assert_same_probabilities
from tests.conftest import CLASSIFIER, FEATURES, fake_model


@pytest.fixture(scope="module")
def signatures(server):
    """What each served model must answer: ``{name: {kind: function(list of images) -> rows}}``."""

    def answers(model, kind):
        return lambda images: np.stack([model.expected(kind, image) for image in images])

    models = {name: fake_model(server, name) for name in (CLASSIFIER, FEATURES)}
    return {
        name: {kind: answers(model, kind) for kind in ("classify", "features")}
        for name, model in models.items()
    }


@pytest.fixture(scope="module")
def real_signatures(real_model_root):
    import tensorflow as tf

    return {
        name: tf.saved_model.load(str(real_model_root / name / "1")).signatures
        for name in (CLASSIFIER, FEATURES)
    }


def test_a_real_version_answers_what_its_savedmodel_answers(real_stub, real_signatures, photos):
    import tensorflow as tf

    images = [photos["chelsea.jpg"], photos["coffee.png"], photos["chelsea.png"]]
    response = real_stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=1000)
    )
    expected = real_signatures[CLASSIFIER]["classify"](images=tf.constant(images))["probabilities"]
    assert_same_probabilities(probabilities(response.results), expected.numpy())
    response = real_stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=images)
    )
    assert (response.model.name, response.model.version, response.dimension) == (FEATURES, 1, 512)
    expected = real_signatures[FEATURES]["features"](images=tf.constant(images))["features"].numpy()
    assert_same_features(np.array([vector.values for vector in response.features], np.float32), expected)


def test_a_real_version_reports_its_metadata(real_stub):
    status = real_stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER))
    metadata = status.versions[0].metadata
    assert (metadata.input_size, metadata.num_classes, metadata.feature_dim) == (32, 1000, 1280)
    assert metadata.labels[281] == "tabby" and metadata.preprocessing == "tf"
    assert status.versions[0].runtime == "tensorflow"


def probabilities(results) -> np.ndarray:
    rows = np.zeros((len(results), len(results[0].predictions)), np.float32)
    for row, result in zip(rows, results, strict=True):
        for prediction in result.predictions:
            row[prediction.class_id] = prediction.score
    return rows


def test_classify_matches_the_signature_and_names_labels_and_version(stub, signatures, photos, model_root):
    images = [photos["chelsea.jpg"], photos["coffee.png"]]
    response = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=images, top_k=1000)
    )
    assert response.model.name == CLASSIFIER and response.model.version == 1
    expected = signatures[CLASSIFIER]["classify"](images)
    labels = (model_root / CLASSIFIER / "1" / "assets" / "labels.txt").read_text().splitlines()
    assert len(response.results) == 2
    for result, row in zip(response.results, expected):
        got = np.zeros(1000, np.float32)
        for prediction in result.predictions:
            got[prediction.class_id] = prediction.score
            assert prediction.label == labels[prediction.class_id]
        assert_same_probabilities(got, row)
        scores = [p.score for p in result.predictions]
        assert scores == sorted(scores, reverse=True)


def test_classify_defaults_to_top_5(stub, photos):
    response = stub.Classify(
        pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.png"]])
    )
    assert len(response.results[0].predictions) == 5
    assert response.results[0].predictions[0].label  # an ImageNet class name such as 'tabby'


def test_extract_features_matches_the_signature(stub, signatures, photos):
    images = [photos["chelsea.png"], photos["coffee.jpg"], photos["chelsea.jpg"]]
    response = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=images)
    )
    assert (response.model.name, response.model.version, response.dimension) == (FEATURES, 1, 512)
    expected = signatures[FEATURES]["features"](images)
    got = np.array([vector.values for vector in response.features], np.float32)
    assert_same_features(got, expected)


def test_features_keep_request_order(stub, photos):
    single = {
        name: stub.ExtractFeatures(
            pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=FEATURES), images=[photos[name]])
        )
        .features[0]
        .values
        for name in ("chelsea.png", "coffee.png")
    }
    both = stub.ExtractFeatures(
        pb.ExtractFeaturesRequest(
            model=pb.ModelSpec(name=FEATURES), images=[photos["coffee.png"], photos["chelsea.png"]]
        )
    ).features
    # Batched and single-image convolutions round differently (~1e-7); the photos differ by ~1e-1.
    scale = np.abs(single["coffee.png"]).max()
    assert_same_features([both[0].values, both[1].values], [single["coffee.png"], single["chelsea.png"]])
    assert np.abs(np.subtract(single["coffee.png"], single["chelsea.png"])).max() > 1e-2 * scale


def test_model_status_reports_metadata(stub):
    status = stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER))
    assert status.default_version == 1
    (version,) = status.versions
    assert version.state == pb.ModelVersionStatus.AVAILABLE
    metadata = version.metadata
    assert (metadata.input_size, metadata.num_classes, metadata.feature_dim) == (96, 1000, 1280)
    assert len(metadata.labels) == 1000 and metadata.labels[281] == "tabby"
    assert status.versions[0].runtime == "fake"
    assert set(metadata.signature_names) == {
        "serving_default",
        "classify",
        "classify_pixels",
        "features",
        "features_pixels",
    }
    assert metadata.preprocessing == "tf"
    assert metadata.created_at.seconds > 0


def test_list_models_lists_both_without_labels(stub):
    models = stub.ListModels(pb.ListModelsRequest()).models
    assert [m.name for m in models] == [CLASSIFIER, FEATURES]
    assert all(not v.metadata.labels for m in models for v in m.versions)
    assert {m.name: m.versions[0].metadata.num_classes for m in models} == {CLASSIFIER: 1000, FEATURES: 0}


def test_server_info_reports_limits(stub):
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.max_images_per_request == 64
    assert info.max_receive_message_bytes == 64 * 1024 * 1024
    assert info.max_batch_size >= 1

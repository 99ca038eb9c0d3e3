"""Calls larger than the server's limits are split into requests, answered in order, by one version."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from client import InvalidImage, ModelClient
from protos.imageserve.v1 import image_service_pb2 as pb
from tests.answers import assert_same_features, assert_same_probabilities
from tests.client.conftest import CLASSIFIER, FEATURES, LIMITED, Recorder
from tests.conftest import write_fake_classifier
from tests.images import decode_rgb, encode
from tests.servers import InProcessServer, copy_version, test_settings


def probabilities(predictions) -> np.ndarray:
    row = np.zeros(1000, np.float32)
    for p in predictions:
        row[p.class_id] = p.score
    return row


def test_more_images_than_a_request_may_carry_keep_their_order(limited_server, client, crops):
    recorder = Recorder()
    with ModelClient(limited_server.address, timeout=60, interceptors=[recorder]) as limited:
        classified = limited.classify(crops, CLASSIFIER, top_k=1000)
        features = limited.extract_features(crops, FEATURES)
    assert [len(r.images) for r in recorder.sent("Classify")] == [3, 3, 2]
    assert [len(r.images) for r in recorder.sent("ExtractFeatures")] == [3, 3, 2]
    assert len(recorder.sent("GetServerInfo")) == 1  # asked once, then cached

    assert (classified.model, classified.version, len(classified)) == (CLASSIFIER, 1, 8)
    expected = np.stack([probabilities(client.classify(image, CLASSIFIER, top_k=1000)[0]) for image in crops])
    assert_same_probabilities(np.stack([probabilities(p) for p in classified]), expected)

    single = np.concatenate([client.extract_features(image, FEATURES).features for image in crops])
    assert features.features.shape == (8, 512) and features.version == 1
    assert_same_features(features.features, single)
    # The crops really differ, so a swapped order would show.
    assert np.abs(single[0] - single[4]).max() > 1e-2 * np.abs(single).max()


def test_requests_stay_under_the_message_size_limit(limited_server, client, photos):
    coffee = decode_rgb(photos["coffee.png"])
    big = [encode(np.ascontiguousarray(np.roll(coffee, 7 * i, axis=1))) for i in range(5)]
    assert all(400_000 < len(data) < 500_000 for data in big)  # two fit in 1 MiB, three do not
    recorder = Recorder()
    with ModelClient(limited_server.address, timeout=60, interceptors=[recorder]) as limited:
        result = limited.extract_features(big, CLASSIFIER)
    sent = recorder.sent("ExtractFeatures")
    assert [len(r.images) for r in sent] == [2, 2, 1]
    assert all(r.ByteSize() <= LIMITED["max_message_bytes"] for r in sent)
    single = np.concatenate([client.extract_features(data, CLASSIFIER).features for data in big])
    np.testing.assert_allclose(result.features, single, rtol=1e-4, atol=1e-5 * np.abs(single).max())


@pytest.mark.parametrize(
    "index, bad, reason",
    [
        (7, b"just some text, not a picture\n", "text, not an image"),  # refused by the header check
        (4, "truncated", "could not decode"),  # caught by the decoder inside the model call
    ],
    ids=["header-check", "decoder"],
)
def test_a_bad_image_in_a_later_chunk_is_named_by_its_index_in_the_call(
    limited_client, crops, photos, index, bad, reason
):
    if bad == "truncated":
        bad = photos["coffee.png"][: len(photos["coffee.png"]) // 2]
    images = list(crops)
    images[index] = bad
    with pytest.raises(InvalidImage) as caught:
        limited_client.classify(images, CLASSIFIER)
    error = caught.value
    assert error.index == index
    assert str(error).startswith(f"image {index}: {reason}")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_image_larger_than_any_request_is_refused_unsent(limited_server, crops):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    recorder = Recorder()
    with ModelClient(limited_server.address, timeout=60, interceptors=[recorder]) as limited:
        with pytest.raises(InvalidImage) as caught:
            limited.classify([crops[0], noise], CLASSIFIER)
    assert caught.value.index == 1
    assert "the server accepts requests of at most 1,048,576 bytes" in str(caught.value)
    assert "not sent" in str(caught.value)
    assert recorder.sent("Classify") == []


def test_a_version_swap_mid_call_starts_over_on_the_new_version(tmp_path, crops):
    """The later requests of a call are pinned to the version that answered the first one; when that
    version is unloaded mid-call, the whole call is made again on the new version."""
    write_fake_classifier(tmp_path, 1)
    v2 = write_fake_classifier(tmp_path / "incoming", 2)
    server = InProcessServer(test_settings(tmp_path, max_images_per_request=3, poll_interval_s=60)).start()
    try:

        def deploy_v2_after_the_first_answer(method, outcome):
            if method.endswith("/Classify") and not swapped:
                swapped.append(outcome.result().model.version)
                copy_version(v2, tmp_path, CLASSIFIER, 2)
                server.reconcile()  # loads v2, then unloads v1

        swapped: list[int] = []
        recorder = Recorder(after=deploy_v2_after_the_first_answer)
        with ModelClient(server.address, timeout=120, interceptors=[recorder]) as client:
            result = client.classify(crops, CLASSIFIER, top_k=1000)
            expected = client.classify(crops, CLASSIFIER, version=2, top_k=1000)
    finally:
        server.stop()
    assert swapped == [1]
    specs = [(r.model.WhichOneof("version_choice"), r.model.version) for r in recorder.sent("Classify")[:5]]
    # v1 answers, the pinned second request finds v1 gone, and the call starts over on v2.
    assert specs == [(None, 0), ("version", 1), (None, 0), ("version", 2), ("version", 2)]
    assert (result.version, len(result)) == (2, 8)
    assert_same_probabilities(
        np.stack([probabilities(p) for p in result]), np.stack([probabilities(p) for p in expected])
    )


def test_an_explicit_version_is_sent_with_every_chunk(limited_server, crops):
    recorder = Recorder()
    with ModelClient(limited_server.address, timeout=60, interceptors=[recorder]) as limited:
        result = limited.extract_features(crops, FEATURES, version=1)
    assert result.version == 1
    assert [r.model for r in recorder.sent("ExtractFeatures")] == [pb.ModelSpec(name=FEATURES, version=1)] * 3


def test_one_client_serves_many_threads(limited_client, client, crops):
    rotations = [crops[i:] + crops[:i] for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda images: limited_client.extract_features(images, FEATURES), rotations))
    single = np.concatenate([client.extract_features(image, FEATURES).features for image in crops])
    for i, result in enumerate(results):
        expected = np.roll(single, -i, axis=0)
        np.testing.assert_allclose(result.features, expected, rtol=1e-4, atol=1e-5 * np.abs(single).max())

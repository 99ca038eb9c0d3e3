"""AsyncModelClient answers what ModelClient answers: same results, same splitting, same errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from client import AsyncModelClient, InvalidImage, ModelNotFound, Unavailable
from tests.answers import assert_same_features
from tests.client.conftest import CLASSIFIER, FEATURES
from tests.servers import free_port


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


def test_async_matches_sync(server, client, photos):
    images = [photos["chelsea.png"], photos["coffee.jpg"]]

    async def calls():
        async with AsyncModelClient(server.address, timeout=60) as aclient:
            return (
                await aclient.classify(images, CLASSIFIER, top_k=3),
                await aclient.extract_features(images, FEATURES),
                await aclient.list_models(),
                await aclient.model_status(CLASSIFIER),
                await aclient.server_info(),
            )

    classified, features, models, status, info = run(calls())
    assert classified == client.classify(images, CLASSIFIER, top_k=3)
    expected = client.extract_features(images, FEATURES)
    assert (features.model, features.version) == (expected.model, expected.version)
    np.testing.assert_array_equal(features.features, expected.features)

    def versions(statuses):
        return [(m.name, m.default_version, [(v.version, v.state) for v in m.versions]) for m in statuses]

    assert versions(models) == versions(client.list_models())
    assert status.versions[0].metadata == client.model_status(CLASSIFIER).versions[0].metadata
    assert info == client.server_info()


def test_async_splits_like_sync(limited_server, limited_client, crops):
    async def calls():
        async with AsyncModelClient(limited_server.address, timeout=60) as aclient:
            return await aclient.extract_features(crops, FEATURES), await aclient.classify(crops, CLASSIFIER)

    features, classified = run(calls())
    expected = limited_client.extract_features(crops, FEATURES)
    assert features.features.shape == (8, 512)
    np.testing.assert_array_equal(features.features, expected.features)
    assert classified == limited_client.classify(crops, CLASSIFIER)


def test_concurrent_calls_share_one_client(server, client, crops):
    async def calls():
        async with AsyncModelClient(server.address, timeout=60) as aclient:
            return await asyncio.gather(*(aclient.extract_features(image, FEATURES) for image in crops))

    results = run(calls())
    single = np.concatenate([client.extract_features(image, FEATURES).features for image in crops])
    # Concurrent requests may be batched together, which rounds differently (~1e-7).
    got = np.concatenate([result.features for result in results])
    assert_same_features(got, single)


def test_async_errors_match_sync(limited_server, crops):
    images = list(crops)
    images[5] = b"just some text, not a picture\n"

    async def calls():
        async with AsyncModelClient(limited_server.address, timeout=60) as aclient:
            with pytest.raises(ModelNotFound, match="unknown model 'vgg61'"):
                await aclient.classify(crops[0], "vgg61")
            with pytest.raises(InvalidImage) as caught:
                await aclient.classify(images, CLASSIFIER)
            return caught.value

    error = run(calls())
    assert error.index == 5 and str(error).startswith("image 5: text, not an image")


def test_async_retries_unavailable():
    async def call():
        async with AsyncModelClient(
            f"127.0.0.1:{free_port()}", timeout=30, retries=2, backoff_s=0.01, max_backoff_s=0.02
        ) as aclient:
            await aclient.list_models()

    with pytest.raises(Unavailable) as caught:
        run(call())
    assert caught.value.attempts == 3

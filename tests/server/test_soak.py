"""Soak: many Classify requests at concurrency 32, 10% invalid images, a hot swap in the middle.

Zero unexpected errors, every valid request answered correctly by the version that says it answered,
server RSS growth <= 15% from warm-up to the end. CI runs 2,000 requests; the full soak is
``IMAGESERVE_SOAK_REQUESTS=20000 bash scripts/test --all tests/server/test_soak.py -s``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client import AsyncModelClient, InvalidImage
from tests.images import encode, photo
from tests.servers import SubprocessServer, copy_version, loopback_args

# A soak: thousands of requests through `python -m server` on a real network: the slow tier's.
pytestmark = pytest.mark.slow

NAME = "mobilenet_v2_keras"
REQUESTS = int(os.environ.get("IMAGESERVE_SOAK_REQUESTS", "2000"))
CONCURRENCY = 32
INVALID_EVERY = 10  # 10% invalid images
# The new version is copied in mid-soak, early enough that loading it (~5 s) ends well before the
# last request: at 10% of a short soak, about 1,000 requests before the middle of a long one.
SWAP_AT = max(REQUESTS // 2 - 1000, REQUESTS // 10)
#: After REQUESTS, how long the soak may go on waiting for the new version to answer.
SWAP_WAIT_S = 300.0


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def valid_images() -> list[bytes]:
    images = [
        encode(photo(name), "JPEG", quality=90) for name in ("chelsea", "coffee", "astronaut", "rocket")
    ]
    return images + [encode(photo(name)) for name in ("chelsea", "coffee")]


def invalid_images() -> list[bytes]:
    cat = encode(photo("chelsea"), "JPEG")
    return [b"", b"not an image at all", cat[: len(cat) // 3], np.random.default_rng(0).bytes(3000)]


def expected_top1(version_dir: Path, images: list[bytes]) -> list[int]:
    classify = tf.saved_model.load(str(version_dir)).signatures["classify"]
    return [
        int(np.argmax(classify(images=tf.constant([image]))["probabilities"].numpy()[0])) for image in images
    ]


async def soak(address: str, on_swap) -> dict:
    valid, invalid = valid_images(), invalid_images()
    outcomes = {"ok": [], "invalid_refused": 0, "unexpected": []}
    next_index = 0
    async with AsyncModelClient(address, timeout=120, retries=0) as client:

        def go_on() -> bool:
            # NOTE: at least REQUESTS, and on until the new version has answered (bounded): how long a
            # hot swap's load takes varies with the runtime's checks and this machine's load.
            if next_index < REQUESTS:
                return True
            swapped = any(version == 2 for _, version, _ in outcomes["ok"])
            return not swapped and time.monotonic() - started < SWAP_WAIT_S

        async def worker() -> None:
            nonlocal next_index
            while go_on():
                index = next_index
                next_index += 1
                if index == SWAP_AT:
                    on_swap()
                if index % INVALID_EVERY == INVALID_EVERY - 1:
                    try:
                        await client.classify(invalid[index % len(invalid)], model=NAME, top_k=1)
                        outcomes["unexpected"].append(f"request {index}: an invalid image was accepted")
                    except InvalidImage:
                        outcomes["invalid_refused"] += 1
                    except Exception as exc:  # any other outcome is recorded and fails the test
                        outcomes["unexpected"].append(f"request {index}: {exc!r}")
                    continue
                image = index % len(valid)
                try:
                    result = await client.classify(valid[image], model=NAME, top_k=1)
                    outcomes["ok"].append((image, result.version, result[0][0].class_id))
                except Exception as exc:  # recorded, then asserted empty
                    outcomes["unexpected"].append(f"request {index}: {exc!r}")

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        outcomes["seconds"] = time.monotonic() - started
        outcomes["requests"] = next_index
    return outcomes


def test_soak_with_invalid_images_and_a_hot_swap(tmp_path, classifier_export, classifier_v2_export):
    root = tmp_path / "models"
    copy_version(classifier_export.path, root, NAME, 1)
    images = valid_images()
    expected = {
        1: expected_top1(classifier_export.path, images),
        2: expected_top1(classifier_v2_export.path, images),
    }
    server = SubprocessServer(
        loopback_args(root, "--poll-interval-s", "0.5", "--state-dir", str(tmp_path / "state"))
    ).start()
    try:
        server.wait_serving()

        async def warm_up():
            async with AsyncModelClient(server.address, timeout=120) as client:
                for _ in range(4):
                    await asyncio.gather(*(client.classify(image, model=NAME) for image in images * 8))

        asyncio.run(warm_up())
        rss_warm = rss_mib(server.process.pid)
        outcomes = asyncio.run(
            soak(server.address, lambda: copy_version(classifier_v2_export.path, root, NAME, 2))
        )
        rss_end = rss_mib(server.process.pid)
    finally:
        assert server.terminate() == 0
    answered_by = {version for _, version, _ in outcomes["ok"]}
    wrong = [(i, v, c) for i, v, c in outcomes["ok"] if c != expected[v][i]]
    growth = rss_end / rss_warm - 1
    sent = outcomes["requests"]
    print(
        f"\nsoak: {sent} requests at concurrency {CONCURRENCY} in {outcomes['seconds']:.1f} s "
        f"({sent / outcomes['seconds']:.0f}/s); {len(outcomes['ok'])} answered (versions "
        f"{sorted(answered_by)}), "
        f"{outcomes['invalid_refused']} invalid refused, {len(outcomes['unexpected'])} unexpected, "
        f"{len(wrong)} wrong; "
        f"RSS {rss_warm:.0f} -> {rss_end:.0f} MiB ({growth:+.1%})"
    )
    assert outcomes["unexpected"] == []
    assert sent >= REQUESTS
    assert outcomes["invalid_refused"] == sent // INVALID_EVERY
    assert len(outcomes["ok"]) == sent - sent // INVALID_EVERY
    assert wrong == []
    assert answered_by == {1, 2}, "the hot swap did not happen during the soak"
    assert growth <= 0.15

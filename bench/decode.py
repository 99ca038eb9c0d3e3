"""Where should images be decoded: in the SavedModel graph, or in Python threads before it?

Runs MobileNetV2 (224x224, random weights) on real JPEG photos three ways, batch of 8:
  graph:    the ``classify`` signature takes the encoded bytes (decode + resize in the graph);
  threads:  Pillow decodes in a thread pool, ``tf.image.resize`` per image, then ``classify_pixels``;
  and the decode step alone each way.
Prints images/s and the ratio. Usage: python -m bench.decode
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import ensure_export, machine, real_jpegs, write_results  # noqa: E402


def rate(fn, images_per_call: int, seconds: float = 8.0) -> float:
    fn()  # warm-up
    calls, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        fn()
        calls += 1
    return calls * images_per_call / (time.monotonic() - started)


def main() -> None:
    import tensorflow as tf

    from graphs.signatures import decode_images

    path = ensure_export("mobilenet_v2_keras", 224)
    model = tf.saved_model.load(str(path))
    classify, classify_pixels = model.signatures["classify"], model.signatures["classify_pixels"]
    photos = real_jpegs()
    batch = (photos * 2)[:8]
    pool = ThreadPoolExecutor(4)

    def pil_decode(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def threads_pixels() -> np.ndarray:
        decoded = list(pool.map(pil_decode, batch))
        return np.stack([tf.image.resize(image, [224, 224]).numpy() for image in decoded]).astype(np.uint8)

    graph_decode = tf.function(lambda images: decode_images(images, 224))
    batch_tensor = tf.constant(batch)
    results = {
        "decode only, graph": rate(lambda: graph_decode(batch_tensor).numpy(), len(batch)),
        "decode only, threads": rate(lambda: list(pool.map(pil_decode, batch)), len(batch)),
        "end to end, graph": rate(lambda: classify(images=batch_tensor)["probabilities"].numpy(), len(batch)),
        "end to end, threads": rate(
            lambda: classify_pixels(pixels=tf.constant(threads_pixels()))["probabilities"].numpy(), len(batch)
        ),
    }
    for name, value in results.items():
        print(f"{name:24s} {value:8.1f} images/s")
    ratio = results["end to end, graph"] / results["end to end, threads"]
    print(f"graph / threads (end to end): {ratio:.2f}")
    summary = {"machine": machine(), "images_per_s": results, "graph_over_threads": ratio}
    written = write_results("decode", summary)
    print(f"written: {written}")


if __name__ == "__main__":
    main()

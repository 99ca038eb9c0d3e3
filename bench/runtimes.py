"""TensorFlow vs ONNX Runtime in the serving benchmark: the issue 20 ratios, and fine-tuning's extraction.

:mod:`bench.serving` measures each model's server once per runtime (``--runtime tensorflow`` and
``--runtime onnxruntime``); each server process times its own runtime in-process (decode + network:
the TensorFlow in-process limit in the first, the ONNX Runtime one in the second). This module turns
the two results into the targets' ratios:

- served c=16 on ONNX Runtime >= 2.0x the TensorFlow in-process concurrent limit, and >= 0.90x the
  ONNX Runtime in-process concurrent limit (both measured next to that load level);
- served c=1 p50 on ONNX Runtime <= 0.6x the TensorFlow in-process single-image p50;
- fine-tuning's feature extraction (:class:`server.finetune.trainer.FrozenBase`) >= 2x faster;
- RSS of each server after its load levels.
"""

from __future__ import annotations

import time
from pathlib import Path


def level(result: dict, concurrency: int) -> dict:
    return next(entry for entry in result["levels"] if entry["concurrency"] == concurrency)


def compare(tensorflow: dict, onnx: dict) -> dict:
    """The issue's ratios from the TensorFlow server's result and the ONNX Runtime server's."""
    tf16, ort16 = level(tensorflow, 16), level(onnx, 16)
    tf_single = tensorflow["c1_latency"]["in_process"]["p50_ms"]
    return {
        "served_c16_onnx_images_per_s": ort16["images_per_s"],
        "tensorflow_concurrent_limit_images_per_s": tf16["concurrent_limit_images_per_s"],
        "onnx_concurrent_limit_images_per_s": ort16["concurrent_limit_images_per_s"],
        "served_c16_onnx_over_tensorflow_concurrent_limit": ort16["images_per_s"]
        / tf16["concurrent_limit_images_per_s"],
        "served_c16_onnx_over_onnx_concurrent_limit": ort16["ratio_to_concurrent_limit"],
        "served_c1_p50_onnx_ms": onnx["c1_latency"]["served"]["p50_ms"],
        "tensorflow_in_process_single_p50_ms": tf_single,
        "served_c1_p50_onnx_over_tensorflow_single": onnx["c1_latency"]["served"]["p50_ms"] / tf_single,
        "rss_mib": {"tensorflow": tensorflow["rss_mib"], "onnxruntime": onnx["rss_mib"]},
    }


def feature_extraction(
    model_path: Path, size: int, photos: list[bytes], images: int = 128, threads: int = 2, rounds: int = 3
) -> dict:
    """Fine-tuning's frozen-base extraction, images/s, on TensorFlow and on the twin, interleaved rounds."""
    import tempfile

    from server.finetune.trainer import EXTRACT_BATCH, FrozenBase

    with tempfile.TemporaryDirectory(prefix="bench-twins-") as cache:
        base = FrozenBase(str(model_path), size, cache, threads)
        twin = base._session
        if twin is None:
            raise ValueError(f"{model_path} has no usable ONNX twin: nothing to compare")
        batches = [
            [photos[(start + i) % len(photos)] for i in range(EXTRACT_BATCH)]
            for start in range(0, images, EXTRACT_BATCH)
        ]
        rates: dict[str, list[float]] = {"tensorflow": [], "onnxruntime": []}
        for _round in range(rounds):
            for runtime in rates:
                base._session = twin if runtime == "onnxruntime" else None
                base.features(batches[0])  # warm
                started = time.monotonic()
                for batch in batches:
                    base.features(batch)
                rates[runtime].append(images / (time.monotonic() - started))
    best = {runtime: max(values) for runtime, values in rates.items()}
    return {"images_per_s": best, "rounds": rates, "speedup": best["onnxruntime"] / best["tensorflow"]}


def report(model: str, ratios: dict, extraction: dict | None) -> list[str]:
    """Print the comparison; return the targets missed."""
    failures = []
    r = ratios
    print(f"\n== {model}: ONNX Runtime vs TensorFlow (issue 20 targets)")
    print(
        f"   served c=16 on onnxruntime {r['served_c16_onnx_images_per_s']:.1f} img/s; in-process "
        "concurrent limits: "
        f"tensorflow {r['tensorflow_concurrent_limit_images_per_s']:.1f}, onnxruntime "
        f"{r['onnx_concurrent_limit_images_per_s']:.1f}"
    )
    checks = [
        (
            "served c=16 ORT / TF in-process concurrent limit >= 2.0",
            r["served_c16_onnx_over_tensorflow_concurrent_limit"],
            2.0,
            True,
        ),
        (
            "served c=16 ORT / ORT in-process concurrent limit >= 0.90",
            r["served_c16_onnx_over_onnx_concurrent_limit"],
            0.9,
            True,
        ),
        (
            f"served c=1 p50 ORT {r['served_c1_p50_onnx_ms']:.1f} ms / TF in-process single "
            f"{r['tensorflow_in_process_single_p50_ms']:.1f} ms <= 0.60",
            r["served_c1_p50_onnx_over_tensorflow_single"],
            0.6,
            False,
        ),
    ]
    if extraction is not None:
        rates = extraction["images_per_s"]
        checks.append(
            (
                f"fine-tuning extraction ORT {rates['onnxruntime']:.1f} / TF {rates['tensorflow']:.1f} "
                "img/s >= 2.0",
                extraction["speedup"],
                2.0,
                True,
            )
        )
    for text, value, target, at_least in checks:
        met = value >= target if at_least else value <= target
        print(f"   {text}: {value:.2f} {'OK' if met else 'MISSED'}")
        if not met:
            failures.append(f"{model}: {text}: {value:.2f}")
    print(
        f"   RSS after the load levels: tensorflow {r['rss_mib']['tensorflow']:.0f} MiB, "
        f"onnxruntime {r['rss_mib']['onnxruntime']:.0f} MiB"
    )
    return failures

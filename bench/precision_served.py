"""Reduced precision served (issue 30): each default model through a real ``python -m server``, today's
fp32 path against bf16, int8 and ``precision = auto``, in one run.

One server holds, per default model (224, the offline stand-ins' weights, its exported twin, the six
photos kept as its calibration images as ``--calibration`` does), four versions under their own names:
``<model>.fp32`` on the defaults (``runtime = auto``, ``precision = fp32``: today's path),
``<model>.bf16`` and ``<model>.int8`` (``runtime = openvino`` at that precision) and ``<model>.auto``
(``runtime = auto``, ``precision = auto``). Windows of load alternate between the four, per model, in
rounds (the machine's speed drifts within seconds): ExtractFeatures at concurrency 4 for vgg16 (the
seed's feature extractor), Classify at concurrency 16 for the others. Each version's status (what it
runs at, the gate's figures) is recorded with the rates and the CPU flags.

    python -m bench.precision_served                 # ~8 minutes on 2 cores
    python -m bench.precision_served --seconds 3 --rounds 1 --models mobilenet_v2_keras   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.common import MODELS_224_DIR, cpu_flags, ensure_export, machine, real_jpegs, write_results
from bench.many_heads import classify, extract, load_window, wait_available
from bench.processes import Server
from bench.scenarios import DEFAULT_STANDINS
from graphs import calibration

VARIANTS = {  # name suffix -> [models.<name>] settings
    "fp32": {},
    "bf16": {"runtime": "openvino", "precision": "bf16"},
    "int8": {"runtime": "openvino", "precision": "int8"},
    "auto": {"precision": "auto"},
}
#: (call, concurrency) per model: the issue's targets.
LOAD = {"vgg16": ("features", 4)}
DEFAULT_LOAD = ("classify", 16)


def calibrated_copy(source: Path, root: Path, name: str, photos: list[bytes]) -> None:
    """``source`` as ``root/name/1`` with ``photos`` as its calibration images (what the exporter's
    ``--calibration`` writes); the large files hard-linked."""
    target = root / name / "1"
    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("manifest.json"))
    manifest = json.loads((source / "manifest.json").read_text())
    content, manifest["calibration"] = calibration.pack(photos)
    (target / calibration.CALIBRATION_FILE).write_bytes(content)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def status_of(address: str, name: str) -> dict:
    import grpc

    from protos.imageserve.v1 import image_service_pb2 as pb
    from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        version = (
            pb_grpc.ImageModelServiceStub(channel)
            .GetModelStatus(pb.GetModelStatusRequest(name=name), timeout=30)
            .versions[0]
        )
    return {
        "runtime": version.runtime,
        "precision": version.precision,
        "precision_detail": version.precision_detail,
        "runtime_detail": version.runtime_detail,
    }


def write_config(root: Path, names: list[str]) -> Path:
    lines = []
    for name in names:
        variant = name.rsplit(".", 1)[1]
        lines.append(f'[models."{name}"]')
        lines += [f'{key} = "{value}"' for key, value in VARIANTS[variant].items()]
    path = root.parent / "precision.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_STANDINS))
    parser.add_argument("--seconds", type=float, default=8.0, help="one load window")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import openvino

    models = [m for m in args.models.split(",") if m]
    photos = real_jpegs()
    results: dict = {
        "machine": {**machine(), "cpu_flags": cpu_flags()},
        "openvino": openvino.__version__,
        "args": vars(args),
        "models": {},
    }
    path = None
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as scratch:
        root = Path(scratch) / "models"
        names = []
        for model in models:
            source = ensure_export(model, 224, root=MODELS_224_DIR, weights=DEFAULT_STANDINS[model])
            for variant in VARIANTS:
                calibrated_copy(source, root, f"{model}.{variant}", photos)
                names.append(f"{model}.{variant}")
        config = write_config(root, names)
        server = Server(root, "--config", str(config), timeout=1800)
        try:
            wait_available(server.address, set(names), timeout=1800)
            started = f"server SERVING in {server.cold_start_s:.0f} s, RSS {server.rss_mib():.0f} MiB"
            print(started, flush=True)
            for model in models:
                kind, concurrency = LOAD.get(model, DEFAULT_LOAD)
                call = extract if kind == "features" else classify
                rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
                failed = 0
                for _ in range(args.rounds):
                    for variant in VARIANTS:
                        name = f"{model}.{variant}"
                        window = asyncio.run(
                            load_window(server.address, call, [name], photos, args.seconds, concurrency)
                        )
                        rates[variant].append(window["images_per_s"])
                        failed += window["failed"]
                base = statistics.median(rates["fp32"])
                figures = {
                    "call": kind,
                    "concurrency": concurrency,
                    "failed": failed,
                    "variants": {
                        variant: {
                            "images_per_s": round(statistics.median(rates[variant]), 1),
                            "rounds": [round(r, 1) for r in rates[variant]],
                            "against_fp32_today": round(statistics.median(rates[variant]) / base, 2),
                            **status_of(server.address, f"{model}.{variant}"),
                        }
                        for variant in VARIANTS
                    },
                }
                results["models"][model] = figures
                path = write_results("precision-served", results, path)
                for variant, row in figures["variants"].items():
                    print(
                        f"{model:20s} {variant:5s} {kind} c={concurrency}: {row['images_per_s']:6.1f} img/s"
                        f" ({row['against_fp32_today']:.2f}x today's fp32) on {row['runtime']}"
                        f" {row['precision']}: {row['precision_detail'][:150]}",
                        flush=True,
                    )
            results["rss_mib"] = round(server.rss_mib(), 1)
            path = write_results("precision-served", results, path)
        finally:
            server.stop()
    print(f"CPU flags: {' '.join(results['machine']['cpu_flags'])}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

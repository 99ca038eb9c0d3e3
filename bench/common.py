"""Shared pieces of the benchmarks: models exported on demand, real JPEG photos, timing helpers."""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
MODELS_DIR = BENCH_DIR / "models"
#: The default models' offline stand-ins at 224 (cold start, the defaults' RSS, the runtime comparison).
MODELS_224_DIR = BENCH_DIR / "models-224"
RESULTS_DIR = BENCH_DIR / "results"
PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "camera")


def real_jpegs(quality: int = 90) -> list[bytes]:
    """Real photos shipped with scikit-image, JPEG-encoded at their natural size (300x451 to 427x640)."""
    import skimage.data

    photos = []
    for name in PHOTO_NAMES:
        pixels = getattr(skimage.data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[..., :3])).save(buffer, format="JPEG", quality=quality)
        photos.append(buffer.getvalue())
    return photos


def ensure_export(
    name: str, input_size: int, seed: int = 0, root: Path = MODELS_DIR, weights: str = "random", **options
) -> Path:
    """The newest version of ``name`` under ``root``; exported with ``weights`` (random unless told) if
    there is none. A root holds one kind of export per name: what is there is reused as it is."""
    from exporter.export import ExportSpec, export_model
    from graphs.progress import Progress
    from storage.local import existing_versions

    versions = existing_versions(root / name)
    if versions:
        return root / name / str(versions[-1])
    spec = ExportSpec(
        name=name, weights=weights, input_size=input_size, seed=seed, output_dir=root, **options
    )
    return export_model(spec, Progress("bench-export")).path


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ordered = sorted(latencies_s)

    def pick(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def machine() -> dict[str, str | int]:
    return {
        "cpus": os.cpu_count() or 0,
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def cpu_flags() -> list[str]:
    """The CPU flags that change what runs fastest here (AVX-512, bf16, AMX): recorded with every run."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()[2:]
    except (OSError, StopIteration):
        return []
    return sorted(f for f in set(flags) if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))


def results_path(kind: str) -> Path:
    """A new dated results file's path: ``bench/results/<kind>-<YYYYmmdd-HHMMSS>.json``."""
    return RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_results(kind: str, results: dict, path: Path | None = None) -> Path:
    """Write ``results`` as JSON to ``path`` (again and again: a long run checkpoints into one file)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = path or results_path(kind)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

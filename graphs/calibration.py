"""A version's calibration images: what int8 quantization measures its activations on, and what the
reduced-precision gate compares fp32 with (besides the fixed check images).

The exporter takes them from ``--calibration DIR``; a fine-tuning job from its own training images.
They are kept in the version as one file, :data:`CALIBRATION_FILE` (a zip of the encoded images as
given, so the server decodes them with the signature's own decode: the pixels serving sees), recorded
in the manifest under ``"calibration"``. No calibration file, no int8.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "calibration.zip"
#: At most this many images are kept (spread over the given ones): int8's activation ranges settle
#: well before (ONNX Runtime's examples calibrate on 10-100), and each costs a fp32 run at load.
MAX_IMAGES = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class CalibrationError(ValueError):
    """The calibration images cannot be used (the message says why)."""


def spread(items: Sequence[Any], count: int = MAX_IMAGES) -> list[Any]:
    """At most ``count`` of ``items``, evenly spread (every class of a sorted listing keeps some)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def images_in(directory: Path | str) -> list[tuple[str, bytes]]:
    """(path, bytes) of the image files in ``directory`` or its subdirectories (one per class is
    common), sorted by path, at most :data:`MAX_IMAGES` of them, spread over the listing."""
    root = Path(directory)
    if not root.is_dir():
        raise CalibrationError(f"--calibration {directory}: not a directory")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(
            f"--calibration {directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subdirectories"
        )
    return [(str(path), path.read_bytes()) for path in spread(paths)]


def pack(images: Sequence[bytes]) -> tuple[bytes, dict[str, Any]]:
    """The calibration file's bytes and its manifest record."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        for index, image in enumerate(images):
            archive.writestr(f"{index:04d}", image)
    content = buffer.getvalue()
    record = {"file": CALIBRATION_FILE, "images": len(images), "sha256": hashlib.sha256(content).hexdigest()}
    return content, record


def read(version: Path, manifest: dict[str, Any]) -> list[bytes]:
    """The version's calibration images, [] when it has none. Raises :class:`CalibrationError` when the
    file does not match its manifest record (a partial copy)."""
    record = manifest.get("calibration") or {}
    if not record:
        return []
    try:
        content = (Path(version) / record["file"]).read_bytes()
    except OSError as exc:
        raise CalibrationError(f"calibration file unreadable: {exc.strerror}") from None
    if hashlib.sha256(content).hexdigest() != record.get("sha256"):
        raise CalibrationError("calibration file does not match the manifest's checksum")
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]

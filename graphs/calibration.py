"""A version's own images for reduced precisions: calibration images, what int8 quantization measures
its activations on and what the gate compares fp32 with (besides the fixed check images); and a
fine-tuned version's held-out (validation) images with their class ids, on which a reduced precision
must keep fp32's accuracy.

The exporter takes calibration images from ``--calibration DIR``; a fine-tuning job takes its own
training images, and a sample of its validation split. Each set is one file in the version,
:data:`CALIBRATION_FILE` / :data:`VALIDATION_FILE` (a zip of the encoded images as given, so the
server decodes them with the signature's own decode: the pixels serving sees; the validation file
adds ``class_ids.json``), recorded in the manifest under ``"calibration"`` / ``"validation"``. No
calibration file, no int8.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "calibration.zip"
VALIDATION_FILE = "validation.zip"
CLASS_IDS_ENTRY = "class_ids.json"
#: At most this many held-out images (spread over the split): 1 image is 0.4 points of accuracy.
MAX_VALIDATION_IMAGES = 256
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


def image_paths(directory: Path | str) -> list[Path]:
    """The image files in ``directory`` or its subdirectories (one per class is common), sorted, at
    most :data:`MAX_IMAGES` of them, evenly spread over the listing; raises :class:`CalibrationError`."""
    root = Path(directory)
    if not root.is_dir():
        raise CalibrationError(f"--calibration {directory}: not a directory")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(
            f"--calibration {directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subdirectories"
        )
    return spread(paths)


def images_in(directory: Path | str) -> list[tuple[str, bytes]]:
    """(path, bytes) of :func:`image_paths`."""
    return [(str(path), path.read_bytes()) for path in image_paths(directory)]


def pack(
    images: Sequence[bytes], class_ids: Sequence[int] | None = None, file: str = CALIBRATION_FILE
) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its manifest record; ``class_ids`` (one per image): a validation file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # images are compressed already
        for index, image in enumerate(images):
            archive.writestr(f"{index:04d}", image)
        if class_ids is not None:
            archive.writestr(CLASS_IDS_ENTRY, json.dumps([int(c) for c in class_ids]))
    content = buffer.getvalue()
    record = {"file": file, "images": len(images), "sha256": hashlib.sha256(content).hexdigest()}
    return content, record


def read_validation(version: Path, manifest: dict[str, Any]) -> tuple[list[bytes], list[int]]:
    """A fine-tuned version's held-out images and their class ids; ([], []) when it has none."""
    content = _content(version, manifest, "validation")
    if content is None:
        return [], []
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = sorted(name for name in archive.namelist() if name != CLASS_IDS_ENTRY)
        class_ids = json.loads(archive.read(CLASS_IDS_ENTRY))
        if len(class_ids) != len(names):
            raise CalibrationError("validation file: one class id per image expected")
        return [archive.read(name) for name in names], class_ids


def read(version: Path, manifest: dict[str, Any]) -> list[bytes]:
    """The version's calibration images, [] when it has none. Raises :class:`CalibrationError` when the
    file does not match its manifest record (a partial copy)."""
    content = _content(version, manifest, "calibration")
    if content is None:
        return []
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def _content(version: Path, manifest: dict[str, Any], key: str) -> bytes | None:
    """The bytes of the file the manifest records under ``key``, checked; None when there is none."""
    record = manifest.get(key) or {}
    if not record:
        return None
    try:
        content = (Path(version) / record["file"]).read_bytes()
    except OSError as exc:
        raise CalibrationError(f"{key} file unreadable: {exc.strerror}") from None
    if hashlib.sha256(content).hexdigest() != record.get("sha256"):
        raise CalibrationError(f"{key} file does not match the manifest's checksum")
    return content

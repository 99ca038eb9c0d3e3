"""Training images: client uploads, data-root directories, and the checks made before any compute.

Both kinds end up as a *dataset index* (``<state_dir>/datasets/<id>/index.json``): the list of
(label, file, display name) a job trains on. An upload's images are stored next to its index; a
directory dataset is a snapshot of the file list of ``<data_root>/<data_dir>`` taken when the job is
started (the Keras ``image_dataset_from_directory`` layout: one sub-directory per class).

Checks, all with a message naming the image or path (never an absolute server path):

- labels: 1..128 characters, no ``/`` and no control characters;
- uploads: ``max_upload_images`` and ``max_upload_bytes``, each image's header (format, size);
- directories: only under ``data_root``; ``..``, absolute paths and symbolic links leading out of the
  root are refused;
- counts (:func:`check_counts`): at least 2 classes and ``min_images_per_class`` images in each;
- every image decodable: the worker's VALIDATING phase (:func:`describe_undecodable`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from server.errors import (
    FailedPrecondition,
    InvalidImage,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)
from server.finetune.jobs import Dataset, UploadedImage
from server.images import inspect_image

MAX_LABEL_CHARS = 128
MAX_NAME_CHARS = 256
INDEX_FILE = "index.json"
#: File name extensions read from a data directory (as Keras' image_dataset_from_directory, plus WebP).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
UPLOAD = "upload"
DIRECTORY = "directory"


@dataclass(frozen=True)
class Entry:
    """One training image: its class, where its bytes are, and how messages name it."""

    label: str
    path: str  # absolute, or relative to the index's directory (uploads)
    name: str


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def check_label(label: str, where: str) -> str:
    if not label:
        raise InvalidRequest(f"{where}: the label is empty; every image needs its class name")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidRequest(
            f"{where}: the label {label[:40]!r}... has {len(label)} characters; at most {MAX_LABEL_CHARS}"
        )
    if "/" in label:
        raise InvalidRequest(f"{where}: the label {label!r} contains '/'; class names cannot contain '/'")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in label):
        raise InvalidRequest(
            f"{where}: the label {label!r} contains control characters or line breaks (a newline, a tab...)"
        )
    return label


def check_counts(images_per_class: dict[str, int], min_per_class: int) -> None:
    """At least two classes, each with ``min_per_class`` images; raise InvalidRequest saying what is short."""
    if len(images_per_class) < 2:
        only = f" (only {next(iter(images_per_class))!r})" if images_per_class else ""
        raise InvalidRequest(
            f"the dataset has {len(images_per_class)} class{only}; a classifier needs at least 2 classes"
        )
    short = {label: n for label, n in sorted(images_per_class.items()) if n < min_per_class}
    if short:
        listed = ", ".join(f"{label!r} has {n}" for label, n in list(short.items())[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise InvalidRequest(
            f"too few images: {listed}{more}; every class needs at least {min_per_class} "
            "(hyperparameters.min_images_per_class): add images or remove the class"
        )


def imbalance_ratio(images_per_class: dict[str, int]) -> float:
    """Largest class size / smallest class size (1.0 is balanced; 0.0 for no images)."""
    counts = [n for n in images_per_class.values() if n > 0]
    return max(counts) / min(counts) if counts else 0.0


def summarize(dataset_id: str, name: str, entries: list[Entry]) -> Dataset:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.label] = counts.get(entry.label, 0) + 1
    per_class = dict(sorted(counts.items()))
    return Dataset(
        dataset_id, name, len(entries), per_class, imbalance_ratio(per_class), dt.datetime.now(dt.UTC)
    )


def write_index(directory: Path, name: str, kind: str, entries: list[Entry], skipped: int = 0) -> None:
    payload = {
        "name": name,
        "kind": kind,
        "skipped": skipped,
        "entries": [[e.label, e.path, e.name] for e in entries],
    }
    tmp = directory / f".{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, directory / INDEX_FILE)


def read_index(index_path: Path) -> tuple[list[Entry], int]:
    """The entries of a dataset index (paths made absolute) and the number of skipped files."""
    payload = json.loads(Path(index_path).read_text())
    base = Path(index_path).parent
    return [Entry(label, str(base / path), name) for label, path, name in payload["entries"]], payload[
        "skipped"
    ]


def index_path(datasets_dir: Path, dataset_id: str) -> Path:
    return datasets_dir / dataset_id / INDEX_FILE


def _display_filename(filename: str, index: int) -> str:
    clean = "".join(ch for ch in filename if unicodedata.category(ch) != "Cc")[:255]
    return clean or f"image {index}"


class UploadWriter:
    """Receives an upload one image at a time into a hidden directory; :meth:`finish` makes it a dataset.

    Nothing is kept if the upload fails or is abandoned: call :meth:`abort`.
    """

    def __init__(self, datasets_dir: Path, max_bytes: int, max_images: int, max_image_pixels: int) -> None:
        self.dataset_id = new_id("ds")
        self.final_dir = datasets_dir / self.dataset_id
        self.dir = datasets_dir / f".upload-{self.dataset_id}"
        (self.dir / "images").mkdir(parents=True)
        self.name = ""
        self.entries: list[Entry] = []
        self.total_bytes = 0
        self.max_bytes = max_bytes
        self.max_images = max_images
        self.max_image_pixels = max_image_pixels

    def set_name(self, name: str) -> None:
        if self.entries:
            raise InvalidRequest("DatasetInfo must be the first message of an upload, before any image")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"the dataset name has {len(name)} characters; at most {MAX_NAME_CHARS}")
        self.name = name

    def add(self, image: UploadedImage) -> None:
        index = len(self.entries)
        display = _display_filename(image.filename, index)
        where = f"image {index}" + (f" ({display!r})" if image.filename else "")
        if index >= self.max_images:
            raise LimitExceeded(
                f"the upload has more than {self.max_images:,} images (max_upload_images); "
                "split it into several datasets or put it under the server's data root and use data_dir"
            )
        self.total_bytes += len(image.data)
        if self.total_bytes > self.max_bytes:
            raise LimitExceeded(
                f"the upload exceeds {self.max_bytes:,} bytes (max_upload_bytes) at {where}; "
                "split it into several datasets or put it under the server's data root and use data_dir"
            )
        check_label(image.label, where)
        try:
            inspect_image(index, image.data, self.max_image_pixels)
        except InvalidImage as exc:
            raise InvalidRequest(f"{where}, label {image.label!r}: {exc.reason}") from None
        relative = f"images/{index:07d}"
        (self.dir / relative).write_bytes(image.data)
        self.entries.append(Entry(image.label, relative, display))

    def finish(self) -> Dataset:
        if not self.entries:
            raise InvalidRequest("the upload contained no images; send one LabeledImage message per image")
        name = self.name or f"upload of {len(self.entries)} images"
        write_index(self.dir, name, UPLOAD, self.entries)
        os.rename(self.dir, self.final_dir)
        return summarize(self.dataset_id, name, self.entries)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.final_dir, ignore_errors=True)  # finished, but its copy to the bucket failed


# --- data-root directories -----------------------------------------------------------------------


def resolve_data_dir(data_root: Path | None, data_dir: str) -> Path:
    """The directory ``data_dir`` names under the data root, or an error that names no server path."""
    if data_root is None:
        raise FailedPrecondition(
            "this server has no data root, so data_dir cannot be used: upload the images with UploadDataset, "
            "or start the server with --data-root DIR"
        )
    relative = PurePosixPath(data_dir)
    if not data_dir or relative.is_absolute() or ".." in relative.parts or "\x00" in data_dir:
        raise InvalidRequest(
            f"data_dir {data_dir!r} must be a path relative to the server's data root, without '..' "
            "(e.g. 'flowers' for <data_root>/flowers)"
        )
    root = Path(data_root).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise PermissionDenied(
            f"data_dir {data_dir!r} leads outside the server's data root through a symbolic link; "
            "only directories under the data root can be read"
        )
    if not target.is_dir():
        try:
            known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            known = []
        listing = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        raise NotFound(
            f"data_dir {data_dir!r} is not a directory under the data root; directories there: {listing}"
        )
    return target


def scan_data_dir(data_root: Path | None, data_dir: str, max_images: int) -> tuple[list[Entry], int]:
    """One entry per image file of ``<data_root>/<data_dir>/<class>/...``; returns (entries, files skipped).

    Symbolic links are followed only while they stay inside the data root; one leading out of it is
    refused with PERMISSION_DENIED. Files whose extension is not an image's are skipped.
    """
    target = resolve_data_dir(data_root, data_dir)
    root = Path(data_root).resolve()
    entries: list[Entry] = []
    skipped = 0
    class_dirs = sorted(p for p in target.iterdir() if not p.name.startswith(".") and p.is_dir())
    for class_dir in class_dirs:
        shown = f"{data_dir.rstrip('/')}/{class_dir.name}"
        if not class_dir.resolve().is_relative_to(root):
            raise PermissionDenied(
                f"{shown!r} is a symbolic link leading outside the data root; remove it or copy the images in"
            )
        label = check_label(class_dir.name, f"class directory {shown!r}")
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                name = str(path.relative_to(target))
                if filename.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped += 1
                    continue
                resolved = path.resolve()
                if not resolved.is_relative_to(root):
                    raise PermissionDenied(
                        f"{data_dir.rstrip('/')}/{name!s} is a symbolic link leading outside the data root; "
                        "remove it or copy the image in"
                    )
                entries.append(Entry(label, str(resolved), name))
                if len(entries) > max_images:
                    raise LimitExceeded(
                        f"data_dir {data_dir!r} has more than {max_images:,} images (max_upload_images); "
                        "train on a subset"
                    )
    if not class_dirs:
        raise InvalidRequest(
            f"data_dir {data_dir!r} has no class sub-directories: expected one directory per class, "
            f"e.g. {data_dir.rstrip('/')}/cat/1.jpg and {data_dir.rstrip('/')}/dog/2.jpg"
        )
    return entries, skipped


def save_directory_index(
    datasets_dir: Path, dataset_id: str, name: str, entries: list[Entry], skipped: int
) -> None:
    """Store a scanned data directory's file list as a dataset (the job trains on this list)."""
    directory = datasets_dir / dataset_id
    directory.mkdir(parents=True)
    write_index(directory, name, DIRECTORY, entries, skipped)


def describe_undecodable(failures: list[tuple[str, str]]) -> str:
    """The message of a dataset with images that cannot be decoded: which ones, and why."""
    shown = "; ".join(f"{name}: {reason}" for name, reason in failures[:10])
    more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
    count = f"{len(failures)} image{'s' if len(failures) != 1 else ''}"
    return f"{count} cannot be decoded: {shown}{more}. Remove or replace them and start the job again"


def still_inside(path: str, data_root: str | Path) -> bool:
    """Whether a snapshotted file still resolves inside the data root (it may have changed since)."""
    return Path(path).resolve().is_relative_to(Path(data_root).resolve())

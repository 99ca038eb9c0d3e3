"""Where versions live: ``<root>/<name>/<version>/``, and the names of everything else in ``<name>/``.

- A version is a directory named by a canonical positive integer (``1``, ``12``; not ``01``, ``0``).
- ``.staging-<version>-<pid>-<random>``: a version being written; renamed to ``<version>`` when it
  is complete and verified (a reader never sees a half-written version on a local root).
- ``.rejected-<version>-<job>``: a fine-tuned version the server refused to load, moved aside.
- ``<version>/_PUBLISHED``: on an object store (``s3://``), written LAST when a version is uploaded;
  readers ignore versions without it, since buckets have no atomic rename (exporter/object_store.py).
- ``network.onnx``: the ONNX twin of the version's network, when the exporter wrote one (its record
  is in the manifest's ``onnx`` key); ``network.onnx.json`` holds the record in the server's cache.
- Any other name (hidden files, ``README``) is ignored by the server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

STAGING_PREFIX = ".staging-"
REJECTED_PREFIX = ".rejected-"
PUBLISHED_MARKER = "_PUBLISHED"
TWIN_FILE = "network.onnx"
TWIN_RECORD_FILE = "network.onnx.json"


def parse_version(name: str) -> int | None:
    """``"12"`` -> 12; anything that is not a canonical positive integer -> None."""
    if name.isdigit() and not (len(name) > 1 and name.startswith("0")) and int(name) > 0:
        return int(name)
    return None


def existing_versions(model_dir: Path) -> list[int]:
    """The version numbers under a local ``<root>/<name>`` directory, ascending."""
    if not model_dir.is_dir():
        return []
    versions = (parse_version(child.name) for child in model_dir.iterdir() if child.is_dir())
    return sorted(v for v in versions if v is not None)


def copy_version(source: Path, root: Path, name: str, version: int) -> Path:
    """Copy an exported version directory to ``root/name/version`` atomically (copied beside it under
    a staging name, then renamed): a server polling the root never sees half a version."""
    target = Path(root) / name / str(version)
    staging = Path(root) / name / f"{STAGING_PREFIX}copy-{version}-{os.getpid()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging)
    os.rename(staging, target)
    return target

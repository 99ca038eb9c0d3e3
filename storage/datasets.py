"""Datasets beside an object-storage model root, so that replicas need not share ``state_dir``.

A dataset is written to ``<state_dir>/datasets/<id>/`` as always (an upload's index and images, a
data-root directory's file list), then ALSO uploaded to ``<model_root>/.datasets/<id>/``, its
completion marker last (:func:`storage.object_store.upload_tree`). Before a job's worker starts, the
replica running it copies the dataset back if its own ``state_dir`` lacks it: into a hidden directory
renamed into place when complete, so a worker never reads a partial copy. Model listings ignore
names with a leading dot, so ``.datasets`` is never taken for a model.

A local model root changes nothing: datasets stay in ``state_dir`` only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from model_format.layout import PUBLISHED_MARKER
from storage.errors import PublishFailed
from storage.object_store import download_tree, open_root, upload_tree
from storage.roots import join

REMOTE_DIR = ".datasets"


def remote_url(model_root: str, dataset_id: str) -> str:
    return str(join(model_root, REMOTE_DIR, dataset_id))


def _remote(model_root: str, dataset_id: str):
    fs, base = open_root(model_root)
    return fs, f"{base}/{REMOTE_DIR}/{dataset_id}"


def publish(model_root: str, local_dir: Path, dataset_id: str) -> None:
    """Upload a finished dataset directory; PublishFailed (worth a retry) when the bucket refuses."""
    fs, target = _remote(model_root, dataset_id)
    try:
        upload_tree(fs, local_dir, target)
    except OSError as exc:
        raise PublishFailed(
            f"could not store the dataset in {remote_url(model_root, dataset_id)}: {exc}; try again"
        ) from None


def published(model_root: str, dataset_id: str) -> bool:
    """Whether the dataset is in the bucket, complete (its marker written)."""
    fs, target = _remote(model_root, dataset_id)
    return fs.exists(f"{target}/{PUBLISHED_MARKER}")


def fetch(model_root: str, datasets_dir: Path, dataset_id: str, complete_when: str) -> bool:
    """Copy the dataset from the bucket into ``datasets_dir`` unless it is there (its file
    ``complete_when`` exists, e.g. the index); True if it was copied.

    Raises OSError (FileNotFoundError when it was never uploaded completely) or ValueError (a bad marker).
    """
    final = datasets_dir / dataset_id
    if (final / complete_when).is_file():
        return False
    fs, source = _remote(model_root, dataset_id)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".fetch-{dataset_id}-", dir=datasets_dir))
    try:
        download_tree(fs, source, scratch)
        try:
            os.rename(scratch, final)
        except OSError:
            if not (final / complete_when).is_file():  # another job's fetch did not finish it either
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True

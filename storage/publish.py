"""Publishing a version: a directory written and checked on local disk, then put into its model root
so that no reader ever sees half of it.

- A **local** root: the version is staged in a hidden directory beside its final place (same
  filesystem: ``<model_dir>/.staging-<version>-<pid>-<random>``), flushed to disk, then renamed into
  ``<model_dir>/<version>`` with ``renameat2(RENAME_NOREPLACE)``: an existing version is never
  overwritten, and a watcher polling the root sees no version or a complete one.
- An **object store** (``s3://...``): staged in a local scratch directory, then uploaded with its
  completion marker LAST (:mod:`storage.object_store`); readers ignore a version without it.

Use :func:`staging`::

    with staging(model_dir, requested_version) as staged:
        ...write and check files in staged.directory...
        where = staged.publish()

Nothing is left behind when the block fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model_format.layout import STAGING_PREFIX
from storage import object_store
from storage.errors import PublishFailed
from storage.local import choose_version, current_umask, fsync_dir, fsync_tree, rename_no_replace
from storage.roots import is_url


@dataclass
class Staged:
    """A version being written: its number, the local directory to write it into, and its root."""

    model_dir: Path | str  # <root>/<name>: a local directory or a URL
    version: int
    directory: Path
    published: Path | str | None = None

    def publish(self) -> Path | str:
        """Put the staged directory into the root (rename, or upload with the marker last); returns
        the version's path or URL. Raises VersionExists if another publisher took the number."""
        if is_url(self.model_dir):
            root, name = str(self.model_dir).rsplit("/", 1)
            try:
                self.published = object_store.upload_version(self.directory, root, name, self.version)
            except OSError as exc:  # s3fs maps S3 errors (access denied, no such bucket) to OSError
                raise PublishFailed(
                    f"could not upload version {self.version} to {self.model_dir}: {exc}"
                ) from None
            return self.published
        try:
            fsync_tree(self.directory)
        except OSError as exc:
            raise PublishFailed(f"could not flush version {self.version} to disk: {exc.strerror}") from None
        final = Path(self.model_dir) / str(self.version)
        rename_no_replace(self.directory, final)
        fsync_dir(Path(self.model_dir))
        self.published = final
        return final


@contextmanager
def staging(model_dir: Path | str, requested: int | None) -> Iterator[Staged]:
    """A private local directory for the next version of ``model_dir`` (or ``requested``); removed
    on exit unless it was published."""
    if is_url(model_dir):
        root, name = str(model_dir).rsplit("/", 1)
        version = object_store.choose_remote_version(root, name, requested)
        with tempfile.TemporaryDirectory(prefix="imageserve-publish-") as scratch:
            directory = Path(scratch) / str(version)
            directory.mkdir()
            yield Staged(model_dir, version, directory)
        return
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        version = choose_version(model_dir, requested)
        directory = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-{os.getpid()}-", dir=model_dir))
        os.chmod(directory, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a version is world-readable
    except OSError as exc:
        raise PublishFailed(f"cannot write under {model_dir}: {exc.strerror}") from None
    try:
        yield Staged(model_dir, version, directory)
    finally:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)

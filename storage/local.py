"""Version directories on a local filesystem: numbering, atomic rename, copying, reading a manifest.

A published version is never overwritten: :func:`rename_no_replace` moves a complete staging
directory into place with ``renameat2(RENAME_NOREPLACE)``, so a reader sees either no version or a
whole one. :mod:`storage.publish` builds the publish protocol on these pieces.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from model_format.layout import STAGING_PREFIX, parse_version
from model_format.manifest import MANIFEST_FILE
from storage.errors import StorageError, VersionExists


def existing_versions(model_dir: Path) -> list[int]:
    """The version numbers under a local ``<root>/<name>`` directory, ascending."""
    if not model_dir.is_dir():
        return []
    versions = (parse_version(child.name) for child in model_dir.iterdir() if child.is_dir())
    return sorted(v for v in versions if v is not None)


def choose_version(model_dir: Path, requested: int | None) -> int:
    """The requested version if it is free, else the next integer after the highest existing one."""
    if requested is None:
        versions = existing_versions(model_dir)
        return versions[-1] + 1 if versions else 1
    if requested < 1:
        raise StorageError(f"--version must be a positive integer, got {requested}")
    if (model_dir / str(requested)).exists():
        raise VersionExists(f"{model_dir / str(requested)} already exists; versions are never overwritten")
    return requested


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """The manifest of a version directory (raises OSError / ValueError as :func:`json.loads` does)."""
    return json.loads((Path(version_dir) / MANIFEST_FILE).read_text())


def content_key(path: Path) -> str:
    """A key of a version's network that changes whenever its graph or weights change: the hash of its
    ``saved_model.pb`` and ``variables/variables.index`` (which holds every tensor's checksum)."""
    digest = hashlib.sha256()
    for relative in ("saved_model.pb", "variables/variables.index"):
        try:
            digest.update((Path(path) / relative).read_bytes())
        except OSError:
            digest.update(relative.encode())
    return digest.hexdigest()[:32]


def copy_version(source: Path, root: Path, name: str, version: int) -> Path:
    """Copy a version directory to ``root/name/version`` atomically (copied beside it under a staging
    name, then renamed): a server polling the root never sees half a version."""
    target = Path(root) / name / str(version)
    staging = Path(root) / name / f"{STAGING_PREFIX}copy-{version}-{os.getpid()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging)
    os.rename(staging, target)
    return target


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` to ``dst``; fail with :class:`VersionExists` if ``dst`` exists."""
    if _renameat2 is not None:
        result = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise VersionExists(f"{dst} already exists; versions are never overwritten")
        if err not in (errno.ENOSYS, errno.EINVAL):  # filesystems without RENAME_NOREPLACE fall through
            raise OSError(err, os.strerror(err), str(dst))
    if dst.exists():
        raise VersionExists(f"{dst} already exists; versions are never overwritten")
    os.rename(src, dst)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

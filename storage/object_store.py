"""Model roots on object storage (``s3://bucket/prefix``, ``gs://...``, anything fsspec serves).

Object stores have no atomic rename, so a version is published in two steps: every file of the
version is uploaded under ``<root>/<name>/<version>/``, then the completion marker
(:data:`model_format.layout.PUBLISHED_MARKER`) is written LAST. Readers ignore a version without its
marker, so a half-uploaded version is never served; deleting the marker (or the whole version)
withdraws it. The marker lists every file and its size, so a reader can check it got them all.

Credentials and endpoints come the standard way of the storage library: for S3 (s3fs/botocore) the
``AWS_*`` environment variables, ``~/.aws`` profiles (``AWS_PROFILE``), or the instance role;
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible server (MinIO, moto).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from model_format.layout import PUBLISHED_MARKER, parse_version
from model_format.manifest import MANIFEST_FILE
from storage.errors import StorageError, UnsupportedRoot, VersionExists
from storage.local import existing_versions, read_manifest
from storage.roots import is_url, storage_problem


def open_root(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the root's path within it (``bucket/prefix``)."""
    import fsspec

    try:
        # NOTE: no listings cache: it would hide versions published or deleted since the last look.
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise UnsupportedRoot(f"model root {storage_problem(url) or f'{url}: {exc}'}") from None


def check_writable_root(url: str) -> None:
    """Raise StorageError, with what to do, unless ``url``'s bucket exists and can be listed.

    Cheap (one listing), so that a publisher finds out before it builds anything: an export to a
    bucket that did not exist failed after ~25 s of building and verifying (issue 28)."""
    fs, base = open_root(url)
    bucket = base.split("/", 1)[0]
    scheme = url.split("://", 1)[0]
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise StorageError(
            f"the bucket {scheme}://{bucket} does not exist: create it first (e.g. `aws s3 mb "
            f"s3://{bucket}`, or your store's console; docs/object-storage.md#creating-the-bucket)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, permissions: the library says which
        raise StorageError(f"cannot list {scheme}://{bucket}: {exc}") from None


def version_numbers(fs: Any, model_path: str, published_only: bool) -> list[int]:
    """Version numbers under ``<root>/<name>/``; all of them (a half-uploaded one is taken too) or
    only those with their completion marker."""
    try:
        children = fs.ls(model_path, detail=False)
    except FileNotFoundError:
        return []
    versions = []
    for child in children:
        version = parse_version(child.rstrip("/").rsplit("/", 1)[-1])
        if version is not None and (
            not published_only or fs.exists(f"{child.rstrip('/')}/{PUBLISHED_MARKER}")
        ):
            versions.append(version)
    return sorted(versions)


def choose_remote_version(url: str, name: str, requested: int | None) -> int:
    """Like :func:`storage.local.choose_version` for an object-store root."""
    fs, base = open_root(url)
    taken = version_numbers(fs, f"{base}/{name}", published_only=False)
    if requested is None:
        return taken[-1] + 1 if taken else 1
    if requested < 1:
        raise StorageError(f"--version must be a positive integer, got {requested}")
    if requested in taken:
        raise VersionExists(f"{url}/{name}/{requested} already exists; versions are never overwritten")
    return requested


def upload_version(local_dir: Path, url: str, name: str, version: int) -> str:
    """Upload a verified local version directory to ``<url>/<name>/<version>/``, marker last.

    NOTE: object stores cannot refuse a second writer atomically; the check for an existing version
    right before the upload narrows the window in which two publishers could take the same number.
    """
    fs, base = open_root(url)
    target = f"{base}/{name}/{version}"
    if fs.exists(target) and fs.find(target):
        raise VersionExists(f"{url}/{name}/{version} already exists; versions are never overwritten")
    upload_tree(fs, local_dir, target)  # without its marker it is never served; a failure frees the number
    return f"{url}/{name}/{version}"


def upload_tree(fs: Any, local_dir: Path, target: str) -> None:
    """Upload every file under ``local_dir`` to ``target`` (a path within ``fs``), then the marker,
    LAST, listing each file and its size. A failed upload is removed (it had no marker anyway)."""
    files = {}
    try:
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(local_dir).as_posix()
            fs.put_file(str(path), f"{target}/{relative}")
            files[relative] = path.stat().st_size
    except OSError:
        _remove_quietly(fs, target)
        raise
    marker = {"files": files, "published_at": time.time()}
    fs.pipe_file(
        f"{target}/{PUBLISHED_MARKER}", (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode()
    )


def download_tree(fs: Any, source: str, local_dir: Path) -> None:
    """Copy the files the marker of ``source`` lists into ``local_dir``, checking each one's size.

    Raises FileNotFoundError when ``source`` has no marker (never uploaded, or unfinished), OSError
    when a file is missing or changed size."""
    marker = json.loads(fs.cat_file(f"{source}/{PUBLISHED_MARKER}"))
    for relative, size in sorted(marker["files"].items()):
        local = local_dir / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{source}/{relative}", str(local))
        if local.stat().st_size != size:
            raise OSError(f"{source}/{relative} has {local.stat().st_size} bytes; its marker says {size}")


def _remove_quietly(fs: Any, path: str) -> None:
    try:
        fs.rm(path, recursive=True)
    except OSError:
        pass


def existing_versions_at(root: Path | str, name: str) -> list[int]:
    """Published versions of ``name`` under a local or object-store root."""
    if is_url(root):
        fs, base = open_root(root)
        return version_numbers(fs, f"{base}/{name}", published_only=True)
    return existing_versions(Path(root) / name)


def read_manifest_at(root: Path | str, name: str, version: int) -> dict:
    """The manifest of a published version under a local or object-store root (OSError, ValueError)."""
    if not is_url(root):
        return read_manifest(Path(root) / name / str(version))
    fs, base = open_root(root)
    return json.loads(fs.cat_file(f"{base}/{name}/{version}/{MANIFEST_FILE}"))


def withdraw(url: str, name: str, version: int) -> None:
    """Stop a version being served by deleting its completion marker (its files stay, for inspection)."""
    fs, base = open_root(url)
    fs.rm_file(f"{base}/{name}/{version}/{PUBLISHED_MARKER}")

"""A model root on object storage, read through a local cache.

:class:`RemoteModelRoot` lists ``<root>/<name>/<version>/`` in one recursive listing per poll and
offers only versions with their completion marker (:data:`model_format.layout.PUBLISHED_MARKER`, written
last by :mod:`storage.object_store`). A version's fingerprint is its files' sizes and ETags, so a
version re-uploaded under the same number counts as changed, like a rewritten local directory.

Before a version loads it is copied to ``<state_dir>/model-cache/<name>/<version>-<digest>/``: into a
hidden temporary directory first, then renamed into place, so a partial copy is never loaded. A copy
whose recorded files match the bucket's is reused (after a restart too), not downloaded again.

A local model root is served in place by :class:`storage.model_roots.LocalModelRoot`;
:func:`storage.model_roots.open_model_root` picks one of the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_format.layout import MODEL_NAME_PATTERN, PUBLISHED_MARKER, parse_version
from storage.errors import DownloadFailed, RootUnavailable
from storage.object_store import open_root

log = logging.getLogger(__name__)

CACHE_RECORD = ".imageserve-cache.json"  # the files (path, size, ETag) a cached copy was made from


@dataclass(frozen=True)
class RemoteVersion:
    """A published version in the bucket: where, and its files as (relative path, size, ETag)."""

    url: str
    path: str  # within the filesystem: bucket/prefix/name/version
    files: tuple[tuple[str, int, str], ...]

    def __str__(self) -> str:
        return self.url


def _etag(info: dict[str, Any]) -> str:
    """The store's checksum of an object (S3 ETag, GCS md5/crc32c), whatever the library calls it."""
    for key in ("ETag", "etag", "md5Hash", "crc32c", "mtime", "LastModified"):
        if info.get(key):
            return str(info[key]).strip('"')
    return ""


class RemoteModelRoot:
    """Lists published versions under an object store URL and copies them into a local cache."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.root = url
        self.cache_dir = cache_dir
        self._fs, self._base = open_root(url)
        self._ignored: set[str] = set()

    def _log_ignored_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            log.info(message, *args)

    def scan(self) -> dict[str, dict[int, RemoteVersion]]:
        """Published versions by model name and version (versions without their marker are ignored)."""
        try:
            listing = self._fs.find(self._base, detail=True)
        except Exception as exc:  # noqa: BLE001 - any library's failure to list: the root is unavailable now
            # NOTE: a bucket that is gone (restarted in-memory store, wrong endpoint) raises here too; it
            # must not read as an empty root, which would unload every version (issue 28).
            raise RootUnavailable(f"model root {self.root} cannot be listed: {exc}") from None
        if not listing:
            self._log_ignored_once(f"root:{self.root}", "model root %s is empty (yet)", self.root)
        by_version: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
        for key, info in listing.items():
            parts = key[len(self._base) :].strip("/").split("/", 2)
            if len(parts) == 3 and not parts[0].startswith("."):
                by_version.setdefault((parts[0], parts[1]), []).append(
                    (parts[2], int(info.get("size") or 0), _etag(info))
                )
        found: dict[str, dict[int, RemoteVersion]] = {}
        for (name, directory), files in sorted(by_version.items()):
            where = f"{name}/{directory}"
            version = parse_version(directory)
            if not MODEL_NAME_PATTERN.match(name) or version is None:
                self._log_ignored_once(where, "ignoring %s: not <model name>/<version number>", where)
            elif not any(path == PUBLISHED_MARKER for path, _size, _etag in files):
                self._log_ignored_once(
                    where, "ignoring %s: no %s marker (upload unfinished?)", where, PUBLISHED_MARKER
                )
            else:
                path = f"{self._base}/{where}"
                found.setdefault(name, {})[version] = RemoteVersion(
                    f"{self.root}/{where}", path, tuple(sorted(files))
                )
        return found

    def fingerprint(self, ref: RemoteVersion) -> tuple:
        return ref.files

    def materialize(self, name: str, version: int, ref: RemoteVersion) -> Path:
        """The local copy of ``ref``: the cached one if its files match, else a fresh download."""
        digest = hashlib.sha256(json.dumps(ref.files).encode()).hexdigest()[:16]
        model_cache = self.cache_dir / name
        target = model_cache / f"{version}-{digest}"
        if _intact(target, ref):
            log.info("%s v%d: using the cached copy %s (no download)", name, version, target)
            return target
        model_cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        scratch = Path(tempfile.mkdtemp(prefix=f".download-{version}-", dir=model_cache))
        try:
            size = self._download(ref, scratch)
            if target.exists():  # a copy that no longer matches its record (edited, truncated)
                shutil.rmtree(target)
            try:
                os.rename(scratch, target)
            except OSError:
                if not _intact(target, ref):  # another process sharing the cache did not finish it either
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for stale in model_cache.glob(f"{version}-*"):  # copies of an earlier upload under this number
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
        log.info(
            "%s v%d: downloaded %d files (%.1f MB) from %s to %s in %.1f s",
            name,
            version,
            len(ref.files) - 1,
            size / 1e6,
            ref.url,
            target,
            time.monotonic() - started,
        )
        return target

    def _download(self, ref: RemoteVersion, scratch: Path) -> int:
        """Copy every file of the version into ``scratch`` and check it against the marker's list."""
        try:
            raw = self._fs.cat_file(f"{ref.path}/{PUBLISHED_MARKER}")
            marker = json.loads(raw) if raw.strip() else {}  # an empty marker (other tools): no file list
            listed = {path: size for path, size, _etag in ref.files if path != PUBLISHED_MARKER}
            missing = sorted(set(marker.get("files", {})) - set(listed))
            if missing:
                raise DownloadFailed(
                    f"{ref.url} is incomplete: {PUBLISHED_MARKER} lists {missing[:3]}, which are missing"
                )
            for path, size in listed.items():
                local = scratch / path
                local.parent.mkdir(parents=True, exist_ok=True)
                self._fs.get_file(f"{ref.path}/{path}", str(local))
                if local.stat().st_size != size:
                    raise DownloadFailed(
                        f"{ref.url}/{path} changed during the download; it is retried when the version "
                        "changes"
                    )
        except (OSError, ValueError) as exc:
            raise DownloadFailed(f"could not download {ref.url}: {exc}") from None
        (scratch / CACHE_RECORD).write_text(json.dumps({"source": ref.url, "files": ref.files}))
        return sum(listed.values())


def _intact(target: Path, ref: RemoteVersion) -> bool:
    """Was ``target`` copied from exactly these files, and are they all there at their sizes?"""
    try:
        record = json.loads((target / CACHE_RECORD).read_text())
        if [tuple(entry) for entry in record["files"]] != list(ref.files):
            return False
        return all(
            (target / path).stat().st_size == size
            for path, size, _etag in ref.files
            if path != PUBLISHED_MARKER
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False

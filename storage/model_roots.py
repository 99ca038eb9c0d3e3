"""The published versions under a model root, and where each one loads from.

A model root is a directory (:class:`LocalModelRoot`, versions served in place) or an object store
URL (:class:`storage.model_cache.RemoteModelRoot`, versions copied into a local cache first);
:func:`open_model_root` picks one. Both answer the same three questions:

- ``scan()``: the complete versions, ``{name: {version: ref}}``; anything else is ignored with one
  log line per path (not per poll). A root that cannot be listed raises
  :class:`storage.errors.RootUnavailable` (never an empty listing: that would unload everything);
- ``fingerprint(ref)``: changes when a version is rewritten, so a failed version is retried then;
- ``materialize(name, version, ref)``: the local directory to load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from model_format.layout import MODEL_NAME_PATTERN, parse_version
from storage.errors import RootUnavailable
from storage.model_cache import RemoteModelRoot
from storage.roots import is_url

log = logging.getLogger(__name__)

#: Under ``state_dir``: the local copies of a bucket's versions.
CACHE_DIR = "model-cache"


def version_fingerprint(path: Path) -> tuple:
    """Names, sizes and mtimes of every file: changes when a version is (re)written or copied."""
    entries = []
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            try:
                stat = os.stat(full)
            except FileNotFoundError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class LocalModelRoot:
    """Lists complete version directories (``<root>/<name>/<version>/saved_model.pb``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ignored: set[str] = set()

    def _log_ignored_once(self, key: str, message: str, *args) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            log.info(message, *args)

    def fingerprint(self, path: Path) -> tuple:
        return version_fingerprint(path)

    def materialize(self, name: str, version: int, path: Path) -> Path:
        """Where the version loads from: in place."""
        return path

    def scan(self) -> dict[str, dict[int, Path]]:
        """Complete SavedModel version directories on disk, by model name and version."""
        found: dict[str, dict[int, Path]] = {}
        try:
            model_dirs = sorted(self.root.iterdir())
        except OSError as exc:  # gone (a volume unmounted), or never made yet
            raise RootUnavailable(f"model root {self.root} cannot be listed: {exc.strerror}") from None
        for model_dir in model_dirs:
            if not model_dir.is_dir():
                continue
            if model_dir.name.startswith("."):
                continue
            if not MODEL_NAME_PATTERN.match(model_dir.name):
                self._log_ignored_once(str(model_dir), "ignoring %s: not a valid model name", model_dir.name)
                continue
            versions: dict[int, Path] = {}
            for version_dir in model_dir.iterdir():
                if version_dir.name.startswith("."):  # staging directories of the exporter and trainer
                    continue
                version = parse_version(version_dir.name) if version_dir.is_dir() else None
                if version is None:
                    self._log_ignored_once(
                        str(version_dir),
                        "ignoring %s/%s: not a version directory",
                        model_dir.name,
                        version_dir.name,
                    )
                elif not (version_dir / "saved_model.pb").is_file():
                    self._log_ignored_once(
                        str(version_dir),
                        "ignoring %s/%s: no saved_model.pb",
                        model_dir.name,
                        version_dir.name,
                    )
                else:
                    versions[version] = version_dir
            if versions:
                found[model_dir.name] = versions
        return found


def open_model_root(root: Path | str, state_dir: Path) -> LocalModelRoot | RemoteModelRoot:
    """The versions of ``root``: in place for a directory, through ``<state_dir>/model-cache`` for a
    URL. Raises :class:`storage.errors.UnsupportedRoot` for a URL this installation cannot read."""
    if not is_url(root):
        return LocalModelRoot(Path(root))
    return RemoteModelRoot(str(root), Path(state_dir) / CACHE_DIR)

"""What is on disk under the model root: model names, version directories, their fingerprints, and
which versions a version policy selects. Pure functions and a scanner; no loading here."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from model_format.layout import parse_version
from server.errors import InvalidRequest
from server.settings import ModelConfig

log = logging.getLogger(__name__)

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_model_name(name: str) -> str:
    """Reject names that are not plain directory names (``/``, ``..``, absolute paths, empty)."""
    if not name:
        raise InvalidRequest("model name is required")
    if not MODEL_NAME_PATTERN.match(name) or ".." in name:
        raise InvalidRequest(
            f"invalid model name {name[:140]!r}: use letters, digits, '.', '_' and '-' (no '/' or '..')"
        )
    return name


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


def select_versions(config: ModelConfig, available: list[int]) -> set[int]:
    """Apply a version policy to the loadable versions on disk."""
    if config.version_policy == "all":
        return set(available)
    if config.version_policy == "specific":
        return set(config.versions) & set(available)
    return set(sorted(available)[-config.latest :])


class ModelRootScanner:
    """Lists complete version directories (``<root>/<name>/<version>/saved_model.pb``); anything
    else is ignored with one log line (per path, not per poll)."""

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
        """Where the version loads from: in place (an object-store root copies it first,
        server/model_store.py)."""
        return path

    def scan(self) -> dict[str, dict[int, Path]]:
        """Complete SavedModel version directories on disk, by model name and version."""
        found: dict[str, dict[int, Path]] = {}
        if not self.root.is_dir():
            self._log_ignored_once(f"root:{self.root}", "model root %s does not exist (yet)", self.root)
            return found
        for model_dir in sorted(self.root.iterdir()):
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

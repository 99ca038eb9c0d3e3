"""Which model names a request may use, and which versions a version policy selects: pure functions.

What is under the model root is listed by :mod:`storage.model_roots`."""

from __future__ import annotations

from model_format.layout import MODEL_NAME_PATTERN
from server.errors import InvalidRequest
from server.settings import ModelConfig


def check_model_name(name: str) -> str:
    """Reject names that are not plain directory names (``/``, ``..``, absolute paths, empty)."""
    if not name:
        raise InvalidRequest("model name is required")
    if not MODEL_NAME_PATTERN.match(name) or ".." in name:
        raise InvalidRequest(
            f"invalid model name {name[:140]!r}: use letters, digits, '.', '_' and '-' (no '/' or '..')"
        )
    return name


def select_versions(config: ModelConfig, available: list[int]) -> set[int]:
    """Apply a version policy to the loadable versions on disk."""
    if config.version_policy == "all":
        return set(available)
    if config.version_policy == "specific":
        return set(config.versions) & set(available)
    return set(sorted(available)[-config.latest :])

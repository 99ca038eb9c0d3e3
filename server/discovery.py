"""Which model names a request may use, and which versions a version policy selects: pure functions.

What is under the model root is listed by :mod:`storage.model_roots`."""

from __future__ import annotations

from model_format.layout import MAX_VERSION_DIGITS, MODEL_NAME_PATTERN
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


def is_version_number(text: str) -> bool:
    """Whether a request's version string is written as a number (ASCII digits; ``"²"`` is not)."""
    return text.isascii() and text.isdigit()


def version_number(text: str) -> int:
    """A version number a request wrote as text: ASCII digits, at least 1, at most 18 digits (int64)."""
    if not is_version_number(text) or len(text) > MAX_VERSION_DIGITS or int(text) < 1:
        raise InvalidRequest(
            f"model version must be a positive integer of at most {MAX_VERSION_DIGITS} digits, "
            f"got {text[:40]!r}"
        )
    return int(text)


def select_versions(config: ModelConfig, available: list[int]) -> set[int]:
    """Apply a version policy to the loadable versions on disk."""
    if config.version_policy == "all":
        return set(available)
    if config.version_policy == "specific":
        return set(config.versions) & set(available)
    return set(sorted(available)[-config.latest :])

"""Errors of building and checking a version's graphs."""

from __future__ import annotations


class VerificationFailed(Exception):
    """The freshly written SavedModel did not load or did not answer; nothing was published."""

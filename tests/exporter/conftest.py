"""Exporter fixtures: the local TF Hub handle pair lives in tests/conftest.py (fine-tuning uses it too)."""

from __future__ import annotations

from tests.conftest import HUB_SIZE  # noqa: F401  (the fidelity tests import it from here)

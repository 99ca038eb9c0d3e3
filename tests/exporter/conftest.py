"""Exporter fixtures: a local TF Hub handle pair."""

from __future__ import annotations

import pytest

from tests.hub_models import save_hub_models

HUB_SIZE = 96


@pytest.fixture(scope="session")
def hub_handles(tmp_path_factory):
    """(paths, keras classifier with logits, keras feature extractor) of a local hub-format model."""
    return save_hub_models(tmp_path_factory.mktemp("hub"), HUB_SIZE)

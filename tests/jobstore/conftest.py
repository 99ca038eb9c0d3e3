"""Job store fixtures: a fresh database per test on the session's PostgreSQL server (``postgres`` in
tests/conftest.py)."""

from __future__ import annotations

import itertools

import pytest

_names = itertools.count()


@pytest.fixture
def postgres_url(postgres) -> str:
    """An empty database of its own for each test."""
    return postgres.fresh_database(f"test_{next(_names)}")

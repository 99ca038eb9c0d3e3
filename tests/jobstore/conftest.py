"""Job store fixtures: a real PostgreSQL server per session (initdb + pg_ctl on a loopback port), a
fresh database per test, and stores of both kinds."""

from __future__ import annotations

import itertools

import pytest

from tests.postgres import PostgresServer, available

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    if not available():
        pytest.skip("initdb and pg_ctl (Debian: postgresql) are not on the PATH")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    """An empty database of its own for each test."""
    return postgres.fresh_database(f"test_{next(_names)}")

"""Fixtures shared by every test package: one throwaway PostgreSQL server per session.

The server is started once (``initdb`` + ``pg_ctl`` as the ``postgres`` user, on a free port;
:mod:`bench.harness.postgres`) the first time a test asks for it; each test gets a fresh
database in it. Tests that need it are marked ``postgres`` and skip, saying how to install
PostgreSQL, when no binaries exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from bench.harness.postgres import (
    PostgresUnavailableError,
    ThrowawayPostgres,
    start_throwaway_postgres,
)

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server for the whole session (skips when PostgreSQL is not installed)."""
    try:
        server = start_throwaway_postgres()
    except PostgresUnavailableError as exc:
        pytest.skip(f"needs a local PostgreSQL (apt install postgresql): {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """URL of a fresh, empty database."""
    return postgres_server.create_database(f"firsthop_test_{next(_databases)}")

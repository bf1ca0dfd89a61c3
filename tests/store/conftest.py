"""Store fixtures: the contract runs on memory, SQLite and a throwaway PostgreSQL server.

The PostgreSQL server is started once per test session (``initdb`` + ``pg_ctl`` as the
``postgres`` user, on a free port); each test gets a fresh database in it. Tests that need it
are marked ``postgres`` and skip, saying how to install PostgreSQL, when no binaries exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_records import StoreKit

from bench.harness.postgres import (
    PostgresUnavailableError,
    ThrowawayPostgres,
    start_throwaway_postgres,
)
from scheduler.store.memory import MemoryStore
from scheduler.store.protocol import Store
from scheduler.store.sql import SqlStore

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server for the whole session (skips when PostgreSQL is not installed)."""
    try:
        server = start_throwaway_postgres()
    except PostgresUnavailableError as exc:
        pytest.skip(f"PostgreSQL tests need a local PostgreSQL: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """URL of a fresh, empty database."""
    return postgres_server.create_database(f"firsthop_test_{next(_databases)}")


def _kit(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    opened: list[Store] = []
    memory = MemoryStore()
    url = ""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'firsthop.db'}"
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_url")

    def tracked() -> Store:
        store: Store = memory if kind == "memory" else SqlStore(url)
        opened.append(store)
        return store

    yield StoreKit(kind, tracked, durable=kind != "memory")
    for store in opened:
        store.close()


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    """Every store implementation, closed after the test."""
    yield from _kit(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", POSTGRES])
def durable_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    """The durable implementations (SQL), closed after the test."""
    yield from _kit(request.param, request, tmp_path)

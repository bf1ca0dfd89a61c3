"""Store fixtures: the contract runs on memory, SQLite and a throwaway PostgreSQL server.

The PostgreSQL server and its fresh databases come from ``tests/conftest.py``
(``postgres_url``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_records import StoreKit

from scheduler.store.memory import MemoryStore
from scheduler.store.protocol import Store
from scheduler.store.sql import SqlStore


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

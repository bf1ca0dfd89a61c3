"""The migrations build exactly the schema the store queries (``scheduler.store.schema``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from scheduler.store.schema import metadata
from scheduler.store.sql import SqlStore, create_engine
from topology.errors import InvalidInputError


def _diff(url: str) -> list[object]:
    store = SqlStore(url)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        store.close()


def test_sqlite_schema_matches_the_migrations(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'schema.db'}") == []


@pytest.mark.postgres
def test_postgres_schema_matches_the_migrations(postgres_url: str) -> None:
    assert _diff(postgres_url) == []


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == "0003"
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://x/y", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://u@h/db", "not a url"],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        create_engine(url)
    assert info.value.reason == "invalid_db_url"


def test_a_database_of_revision_0001_upgrades_and_keeps_its_nodes(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from scheduler.store import migrations

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(Path(migrations.__file__).parent))
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.execute(
                sa.text(
                    "INSERT INTO nodes (name, state, health, gpus, reason, agent_version, version)"
                    " VALUES ('h1', 'READY', 'HEALTHY', 8, '', 'v1', 1)"
                )
            )
    finally:
        engine.dispose()
    store = SqlStore(url)
    try:
        (node,) = store.load().nodes
    finally:
        store.close()

    assert node.name == "h1"
    assert node.address == ""

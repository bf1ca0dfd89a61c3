"""Alembic environment of the SQL store: runs migrations on the connection it is handed.

:func:`scheduler.store.sql.migrate` builds the Alembic configuration in code (no
``alembic.ini``) and passes an open connection in ``config.attributes["connection"]``. For the
``alembic`` command line (writing new revisions), a URL in the ``FIRSTHOP_DB_URL`` environment
variable or the ``sqlalchemy.url`` option is used instead.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from scheduler.store.schema import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # One transaction per revision, DDL and version stamp together (see
        # scheduler.store.sql.migrate): a kill never leaves a revision half applied.
        transaction_per_migration=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("FIRSTHOP_DB_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set FIRSTHOP_DB_URL to the database to migrate")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()

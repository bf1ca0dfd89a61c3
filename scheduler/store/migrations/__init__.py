"""Alembic migrations of the SQL store (run at open by :func:`scheduler.store.sql.migrate`)."""

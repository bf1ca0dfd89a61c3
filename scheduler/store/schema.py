"""The tables of the SQL store (SQLAlchemy Core), as the latest migration leaves them.

Migrations (``scheduler/store/migrations/versions``) create and change the tables; this module
describes the result for queries and must be kept equal to it (a test compares them).

- ``queues``: one row per queue;
- ``nodes``: one row per host (state, health, agent and its address; heartbeat times only
  as of the last state change);
- ``jobs``: the columns used to filter and order, the spec as JSON, and the rest of the record
  (allocation, failures, bookkeeping) as one JSON document;
- ``leader_lease``: one row per lease name: the fencing epoch and who holds it
  (:mod:`scheduler.store.lease`);
- ``campaigns``: one row per maintenance campaign, the record (spec and hosts) as one JSON
  document;
- ``users``: one row per bearer token (the user, role, SHA-256 digest of the secret, when
  created and revoked; :mod:`scheduler.store.access`);
- ``audit``: one row per state-changing call (who, how authenticated, method, resource,
  result, when).

Enums are stored as strings, times as ``TIMESTAMP WITH TIME ZONE`` (UTC on SQLite).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive values; store UTC (naive UTC on SQLite, which keeps no zone)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Aware UTC."""
        if value is None:
            return None
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("gpu_quota", sa.Integer, nullable=True),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("labels", JSONDoc, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("health", sa.String(16), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("agent_version", sa.String(64), nullable=False),
    sa.Column("address", sa.String(255), nullable=False, server_default=""),
    sa.Column("registered_at", UtcDateTime, nullable=True),
    sa.Column("last_heartbeat_at", UtcDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("spare", sa.Boolean, nullable=False, server_default=sa.false()),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("submission_id", sa.String(255), nullable=True),
    sa.Column("submitted_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("spec", JSONDoc, nullable=False),
    sa.Column("data", JSONDoc, nullable=False),
    sa.UniqueConstraint("user", "submission_id", name="uq_jobs_user_submission"),
    sa.Index("ix_jobs_state", "state"),
    sa.Index("ix_jobs_queue", "queue"),
    sa.Index("ix_jobs_user", "user"),
    sa.Index("ix_jobs_submitted", "submitted_at", "id"),
    sa.Index("ix_jobs_finished", "finished_at"),
)

leader_lease = sa.Table(
    "leader_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("backend_pid", sa.Integer, nullable=True),
    sa.Column("renewed_at", UtcDateTime, nullable=True),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("data", JSONDoc, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Index("ix_users_user", "user"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("who", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("via", sa.String(32), nullable=False),
    sa.Column("method", sa.String(128), nullable=False),
    sa.Column("resource", sa.String(255), nullable=False),
    sa.Column("result", sa.String(64), nullable=False),
    sa.Index("ix_audit_at", "at", "id"),
)

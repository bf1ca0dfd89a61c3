"""Initial schema: queues, nodes, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and the job indexes."""
    op.create_table(
        "queues",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("gpu_quota", sa.Integer, nullable=True),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("labels", JSONDoc, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=True),
        sa.Column("last_heartbeat_at", UtcDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "jobs",
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
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_queue", "jobs", ["queue"])
    op.create_index("ix_jobs_user", "jobs", ["user"])
    op.create_index("ix_jobs_submitted", "jobs", ["submitted_at", "id"])


def downgrade() -> None:
    """Drop everything."""
    op.drop_table("jobs")
    op.drop_table("nodes")
    op.drop_table("queues")

"""Index jobs by ``finished_at``: a restart loads live and recently finished jobs only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add ``ix_jobs_finished``."""
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])


def downgrade() -> None:
    """Drop ``ix_jobs_finished``."""
    op.drop_index("ix_jobs_finished", table_name="jobs")

"""The leader lease of schedulers sharing one PostgreSQL store (one row; SQLite keeps it too).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``leader_lease``."""
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("backend_pid", sa.Integer, nullable=True),
        sa.Column("renewed_at", UtcDateTime, nullable=True),
    )


def downgrade() -> None:
    """Drop ``leader_lease``."""
    op.drop_table("leader_lease")

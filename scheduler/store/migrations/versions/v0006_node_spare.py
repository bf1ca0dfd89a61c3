"""Nodes may be in the operator's spare pool (``firsthopctl nodes spare``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add ``nodes.spare`` (false: an ordinary host)."""
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("spare", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    """Drop ``nodes.spare``."""
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("spare")

"""Nodes remember the address their agent registered (``MASTER_ADDR`` of jobs they lead).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add ``nodes.address`` (empty: the host name)."""
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("address", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop ``nodes.address``."""
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("address")

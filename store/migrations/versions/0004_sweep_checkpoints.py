"""Checkpoints of the catch-up sweeps (how far each has looked for missed webhooks).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import AwareDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep_checkpoint",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", AwareDateTime(), nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sweep_checkpoint")

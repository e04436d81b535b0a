"""Inbound webhook events: the deduplication record of deliveries already accepted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import AwareDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("received_at", AwareDateTime(), nullable=False),
        sa.UniqueConstraint("source", "event_id", name="uq_inbound_event"),
    )
    op.create_index("ix_inbound_event_workflow_id", "inbound_event", ["workflow_id"])
    op.create_index("ix_inbound_event_correlation_id", "inbound_event", ["correlation_id"])


def downgrade() -> None:
    op.drop_table("inbound_event")

"""Invoice drafts of time-to-invoice runs (bulky data kept out of workflow history).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import AwareDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoice_draft",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rated", sa.JSON(), nullable=False),
        sa.Column("adjustments", sa.JSON(), nullable=False),
        sa.Column("billing_invoice_id", sa.String(255), nullable=True),
        sa.Column("invoice_number", sa.String(255), nullable=True),
        sa.Column("erp_invoice_id", sa.String(64), nullable=True),
        sa.Column("erp_line_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.Column("updated_at", AwareDateTime(), nullable=False),
    )
    op.create_index("ix_invoice_draft_workflow_id", "invoice_draft", ["workflow_id"])
    op.create_index("ix_invoice_draft_project_id", "invoice_draft", ["project_id"])


def downgrade() -> None:
    op.drop_table("invoice_draft")

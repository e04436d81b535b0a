"""Contracts as provisioned (versioned), and the kind of each invoice draft.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import AwareDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contract_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("contract_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", AwareDateTime(), nullable=False),
        sa.UniqueConstraint("contract_id", "version", name="uq_contract_version"),
    )
    op.create_index("ix_contract_version_contract_id", "contract_version", ["contract_id"])
    op.create_index("ix_contract_version_project_id", "contract_version", ["project_id"])
    with op.batch_alter_table("invoice_draft") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="period"))


def downgrade() -> None:
    with op.batch_alter_table("invoice_draft") as batch:
        batch.drop_column("kind")
    op.drop_index("ix_contract_version_project_id", "contract_version")
    op.drop_index("ix_contract_version_contract_id", "contract_version")
    op.drop_table("contract_version")

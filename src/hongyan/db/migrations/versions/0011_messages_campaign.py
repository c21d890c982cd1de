"""messages know the campaign, variant and contact that planned them

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column(
                "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    op.create_index(
        "ix_messages_campaign",
        "messages",
        ["tenant_id", "campaign_id", "variant"],
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
        sqlite_where=sa.text("campaign_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_campaign", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("contact_id")
        batch.drop_column("variant")
        batch.drop_column("campaign_id")

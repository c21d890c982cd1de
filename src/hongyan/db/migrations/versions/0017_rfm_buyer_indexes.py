"""The buyers' values of each RFM dimension in order: three partial indexes of contact_activity

Revision ID: 0017
Revises: 0014
Create Date: 2026-11-30 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None

BUYER = "last_order_at IS NOT NULL AND orders_count > 0"
COLUMNS = ("last_order_at", "orders_count", "revenue_fen")


def upgrade() -> None:
    # A recompute walks these for the quintile cut points (OFFSET … LIMIT from the nearer end)
    # and counts the buyers per order count, instead of sorting every buyer's row.
    with op.batch_alter_table("contact_activity", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.create_index(
                f"ix_contact_activity_buyer_{column}",
                ["tenant_id", column],
                unique=False,
                postgresql_where=sa.text(BUYER),
                sqlite_where=sa.text(BUYER),
            )


def downgrade() -> None:
    with op.batch_alter_table("contact_activity", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.drop_index(f"ix_contact_activity_buyer_{column}")

"""The buyers' values of each RFM dimension in order (three partial indexes of contact_activity)
and a tenant's contacts counted from a one-column index

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
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
    # The recompute counts the tenant's contacts: over (tenant_id) alone, deduplicated, about
    # 7 MB for a million contacts, where (tenant_id, created_at, id) is 39 MB.
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_tenant", ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_tenant")
    with op.batch_alter_table("contact_activity", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.drop_index(f"ix_contact_activity_buyer_{column}")

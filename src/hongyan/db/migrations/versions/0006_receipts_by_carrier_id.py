"""receipts looked up by carrier id first; parts without a tenant index; unreceipted sweep index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


SUBMITTED = sa.text("state = 'submitted'")


def upgrade() -> None:
    op.create_index(
        "ix_messages_unreceipted",
        "messages",
        ["expires_at"],
        postgresql_where=SUBMITTED,
        sqlite_where=SUBMITTED,
    )
    with op.batch_alter_table("message_parts", schema=None) as batch_op:
        batch_op.drop_index("ix_message_parts_channel_carrier")
        batch_op.drop_index("ix_message_parts_tenant_id")
    op.create_index("ix_message_parts_carrier", "message_parts", ["carrier_id", "channel"])
    with op.batch_alter_table("unmatched_receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_unmatched_receipts_channel_carrier")
    op.create_index(
        "ix_unmatched_receipts_carrier", "unmatched_receipts", ["carrier_id", "channel"]
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unreceipted", table_name="messages")
    op.drop_index("ix_unmatched_receipts_carrier", table_name="unmatched_receipts")
    op.create_index(
        "ix_unmatched_receipts_channel_carrier", "unmatched_receipts", ["channel", "carrier_id"]
    )
    op.drop_index("ix_message_parts_carrier", table_name="message_parts")
    op.create_index("ix_message_parts_tenant_id", "message_parts", ["tenant_id"])
    op.create_index("ix_message_parts_channel_carrier", "message_parts", ["channel", "carrier_id"])

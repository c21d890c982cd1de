"""messages: partial indexes for the hot path; receipts updated in place

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hongyan.db.scope import unscoped

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PLANNED = sa.text("state = 'planned'")
SENDING = sa.text("state = 'sending'")
KEYED = sa.text("idempotency_key IS NOT NULL")


def _ddl(statement: str) -> None:
    op.execute(unscoped(sa.text(statement), "schema migration"))


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("uq_messages_tenant_idempotency", type_="unique")
        batch_op.drop_index("ix_messages_claim")
        batch_op.drop_index("ix_messages_lease")
        batch_op.drop_index("ix_messages_tenant_id")
    op.create_index(
        "uq_messages_tenant_idempotency",
        "messages",
        ["tenant_id", "idempotency_key"],
        unique=True,
        postgresql_where=KEYED,
        sqlite_where=KEYED,
    )
    op.create_index(
        "ix_messages_claim",
        "messages",
        ["lane", "due_at"],
        postgresql_where=PLANNED,
        sqlite_where=PLANNED,
    )
    op.create_index(
        "ix_messages_lease",
        "messages",
        ["lease_until"],
        postgresql_where=SENDING,
        sqlite_where=SENDING,
    )
    if op.get_context().dialect.name == "postgresql":
        # A receipt changes no indexed column of its part: with room left on the page the
        # update stays on it (a HOT update) and writes no index at all.
        _ddl("ALTER TABLE message_parts SET (fillfactor = 80)")
        _ddl("ALTER TABLE messages SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _ddl("ALTER TABLE message_parts RESET (fillfactor)")
        _ddl("ALTER TABLE messages RESET (fillfactor)")
    op.drop_index("ix_messages_lease", table_name="messages")
    op.drop_index("ix_messages_claim", table_name="messages")
    op.drop_index("uq_messages_tenant_idempotency", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_tenant_id", ["tenant_id"], unique=False)
        batch_op.create_index("ix_messages_lease", ["state", "lease_until"], unique=False)
        batch_op.create_index("ix_messages_claim", ["state", "lane", "due_at"], unique=False)
        batch_op.create_unique_constraint(
            "uq_messages_tenant_idempotency", ["tenant_id", "idempotency_key"]
        )

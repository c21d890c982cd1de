"""Tables written a million rows at a time without per-row foreign-key triggers; the consent
ledger's latest record read from its index alone

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30 07:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

MEMBER_KEYS = (
    ("fk_audience_members_audience_id_audiences", "audiences", "audience_id"),
    ("fk_audience_members_contact_id_contacts", "contacts", "contact_id"),
    ("fk_audience_members_tenant_id_tenants", "tenants", "tenant_id"),
)
# Each of these tables keeps its other keys; only the one to tenants goes.
TENANT_KEYED = (
    "messages", "message_parts", "contacts", "consent_records", "contact_tags",
    "contact_events", "links", "clicks", "coupons",
)  # fmt: skip


def upgrade() -> None:
    # A foreign key is a trigger run for every inserted row. The audience snapshot's three were
    # 15 of the 20 seconds a million-member snapshot took (its rows come from contacts in the
    # same statement; forget and the retention run delete what the cascades deleted); the
    # tenant keys were a third of the server's work in a contacts import. Tenant ids come from
    # a TenantScope and tenants are never deleted (see tenant_column in tables.py).
    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        for name, _table, _column in MEMBER_KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")
    for table in TENANT_KEYED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_tenant_id_tenants", type_="foreignkey")
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_records_number")
        batch_op.create_index(
            "ix_consent_records_number",
            ["tenant_id", "phone_index", "purpose", "at", "id"],
            unique=False,
            postgresql_include=["action"],
        )


def downgrade() -> None:
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_records_number")
        batch_op.create_index(
            "ix_consent_records_number", ["tenant_id", "phone_index", "purpose", "at"], unique=False
        )
    for table in TENANT_KEYED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_tenant_id_tenants", "tenants", ["tenant_id"], ["id"],
                ondelete="CASCADE",
            )  # fmt: skip
    with op.batch_alter_table("audience_members", schema=None) as batch_op:
        for name, table, column in MEMBER_KEYS:
            batch_op.create_foreign_key(name, table, [column], ["id"], ondelete="CASCADE")

"""contacts and messages carry the recipient's time zone (quiet hours in local time)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
    # The few contacts with a zone of their own, read at every launch (an index-only scan).
    op.create_index(
        "ix_contacts_time_zone",
        "contacts",
        ["tenant_id", "id", "time_zone"],
        postgresql_where=sa.text("time_zone IS NOT NULL"),
        sqlite_where=sa.text("time_zone IS NOT NULL"),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("time_zone")
    op.drop_index("ix_contacts_time_zone", table_name="contacts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("time_zone")

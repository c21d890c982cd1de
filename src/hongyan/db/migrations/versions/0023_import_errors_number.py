"""An import's refused rows remember the blind index of their number when it read as one, so
``contacts forget`` erases them too (a row refused for its birthday holds the person's number
and name)

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30 21:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hongyan.db.scope import unscoped

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added natively on both (nullable, no default): SQLite's ADD COLUMN needs no rebuild.
    # Rows refused before this keep a null: they are deleted 30 days after their import.
    op.add_column(
        "contact_import_errors", sa.Column("phone_index", sa.LargeBinary(32), nullable=True)
    )
    op.create_index(
        "ix_contact_import_errors_number", "contact_import_errors", ["tenant_id", "phone_index"]
    )


def downgrade() -> None:
    op.drop_index("ix_contact_import_errors_number", table_name="contact_import_errors")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("contact_import_errors", "phone_index")
    else:  # natively (SQLite 3.35+), not by rebuilding the table
        op.execute(
            unscoped(
                sa.text("ALTER TABLE contact_import_errors DROP COLUMN phone_index"),
                "schema migration",
            )
        )

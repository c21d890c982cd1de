"""The consent ledger loses its one-column tenant index (served by ix_consent_records_number)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every query on consent_records names the tenant, and ix_consent_records_number leads with
    # tenant_id: the point lookups and the audiences' latest-record probe use it already, and the
    # retention purge's per-tenant scan does too once this index is gone (EXPLAIN: an index-only
    # scan of the tenant's range, or a sequential scan when the tenant is most of the table,
    # with or without it). Dropping it spares an import a third index insert per appended row.
    # Dropping an index needs no table rebuild on SQLite, so no batch operation.
    op.drop_index("ix_consent_records_tenant_id", table_name="consent_records")


def downgrade() -> None:
    op.create_index("ix_consent_records_tenant_id", "consent_records", ["tenant_id"], unique=False)

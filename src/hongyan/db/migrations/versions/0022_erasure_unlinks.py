"""An erased person's conversions and journey enrolments stay, unlinked: their contact id may be
null, and a conversion keeps the place its buyer had so reports still place it

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hongyan.db.scope import unscoped

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def _run(statement: str) -> None:
    op.execute(unscoped(sa.text(statement), "schema migration"))


def upgrade() -> None:
    # `contacts forget` keeps the rows the campaign and journey reports count (a conversion's
    # order amount, an enrolment's state and outcome) and sets their contact id to null: the
    # contact is gone, and no row may lead back to the person. On SQLite each table is rebuilt
    # (batch mode); neither is referenced by a foreign key, so nothing cascades from its
    # DROP TABLE (and migrate.upgrade runs with foreign keys off anyway); the rebuild keeps the
    # partial index ix_conversions_journey partial (as 0019's rebuild of clicks did).
    with op.batch_alter_table("conversions") as batch:
        batch.alter_column("contact_id", existing_type=sa.BigInteger(), nullable=True)
        # The buyer's number province, city and carrier, written by forget only (until then
        # the report reads them from the contact, as before).
        batch.add_column(sa.Column("number_province", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("number_city", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("carrier", sa.String(length=8), nullable=True))
    with op.batch_alter_table("journey_enrolments") as batch:
        batch.alter_column("contact_id", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    # An unlinked row has no contact to point to again: enrolments go (their foreign key would
    # refuse any id), conversions take the id 0, which no contact has.
    _run("DELETE FROM journey_enrolments WHERE contact_id IS NULL")
    _run("UPDATE conversions SET contact_id = 0 WHERE contact_id IS NULL")
    with op.batch_alter_table("journey_enrolments") as batch:
        batch.alter_column("contact_id", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("conversions") as batch:
        batch.drop_column("carrier")
        batch.drop_column("number_city")
        batch.drop_column("number_province")
        batch.alter_column("contact_id", existing_type=sa.BigInteger(), nullable=False)

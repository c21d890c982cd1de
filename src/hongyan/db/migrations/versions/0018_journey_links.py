"""journeys carry links and coupons: a send step's link target and coupon pool, and links,
clicks, coupons and conversions that name the journey (its step is the variant)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

JOURNEY = "journey_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("journey_steps") as batch:
        batch.add_column(sa.Column("link_url", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("coupon_pool_id", sa.Integer(), nullable=True))
    for table in ("links", "clicks", "coupons", "conversions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("journey_id", sa.Integer(), nullable=True))
    # A journey's report reads its clicks and conversions by these; partial, so campaign rows
    # (all of them today) never enter them and a click's insert writes no extra entry.
    for table in ("clicks", "conversions"):
        op.create_index(
            f"ix_{table}_journey",
            table,
            ["tenant_id", "journey_id", "variant"],
            postgresql_where=sa.text(JOURNEY),
            sqlite_where=sa.text(JOURNEY),
        )


def downgrade() -> None:
    for table in ("clicks", "conversions"):
        op.drop_index(f"ix_{table}_journey", table_name=table)
    for table in ("links", "clicks", "coupons", "conversions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("journey_id")
    with op.batch_alter_table("journey_steps") as batch:
        batch.drop_column("coupon_pool_id")
        batch.drop_column("link_url")

"""holiday arrangements loaded by the operator

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hongyan.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calendar_arrangements",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("loaded_by", sa.String(length=80), nullable=False),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_calendar_arrangements")),
    )


def downgrade() -> None:
    op.drop_table("calendar_arrangements")

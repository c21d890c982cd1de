"""RFM as 12 cut points and three score sums per tenant, not a score row per contact

Revision ID: 0014
Revises: 0011
Create Date: 2026-11-30 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rfm_cuts",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        *(sa.Column(f"r{k}", sa.DateTime(timezone=True), nullable=True) for k in range(2, 6)),
        *(sa.Column(f"f{k}", sa.Integer(), nullable=True) for k in range(2, 6)),
        *(sa.Column(f"m{k}", sa.BigInteger(), nullable=True) for k in range(2, 6)),
        sa.Column("r_sum", sa.BigInteger(), nullable=False),
        sa.Column("f_sum", sa.BigInteger(), nullable=False),
        sa.Column("m_sum", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_rfm_cuts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_rfm_cuts")),
        info={"tenant_scoped": True},
    )
    # "has interest X (with weight ≥ w)" as an index-only scan: the tag's entries, the weight
    # range, the contact ids, no table pages (the old index is this one's prefix)
    with op.batch_alter_table("contact_interests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_interests_tag_weight",
            ["tenant_id", "tag", "weight", "contact_id"],
            unique=False,
        )
        batch_op.drop_index("ix_contact_interests_tenant_tag")
    # Scores are computed from the cuts and the aggregates when read: the per-contact rows go
    # (the next recompute writes the cuts).
    with op.batch_alter_table("contact_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_scores_tenant")
    op.drop_table("contact_scores")


def downgrade() -> None:
    op.create_table(
        "contact_scores",
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("r_score", sa.SmallInteger(), nullable=True),
        sa.Column("f_score", sa.SmallInteger(), nullable=True),
        sa.Column("m_score", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_group", sa.String(length=20), nullable=True),
        sa.Column("lifecycle", sa.String(length=12), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_scores_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_contact_scores_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contact_scores")),
        info={"tenant_scoped": True},
    )
    with op.batch_alter_table("contact_scores", schema=None) as batch_op:
        batch_op.create_index("ix_contact_scores_tenant", ["tenant_id"], unique=False)
    op.drop_table("rfm_cuts")
    with op.batch_alter_table("contact_interests", schema=None) as batch_op:
        batch_op.create_index("ix_contact_interests_tenant_tag", ["tenant_id", "tag"], unique=False)
        batch_op.drop_index("ix_contact_interests_tag_weight")

"""A/B metrics from tracking data: per variant, successes out of delivered messages.

The campaigns capability decides an A/B test by a metric (``campaigns.service.METRICS``); the
delivery and reply rates it computes itself, the click and conversion rates come from here
(connected by :func:`hongyan.tracking.wiring.connect`). Trials are the variant's delivered
messages; successes are distinct contacts who clicked (bots and link previews apart), or distinct
contacts with an attributed order.

A person who had their data erased (``contacts forget``) leaves their clicks and conversions
unlinked (no contact id): each such click still counts by its link (a recipient's own, one per
message), each such conversion as one buyer, so a test waiting for its decision keeps its
successes (an erased buyer with two attributed orders in one variant counts twice).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.scope import TenantScope
from hongyan.db.tables import clicks, conversions, messages
from hongyan.dispatch.states import State


def _delivered(conn: Connection, tenant_id: int, campaign_id: int) -> dict[str, int]:
    m = messages.c
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(messages, m.variant, sa.func.count())
        .where(m.campaign_id == campaign_id, m.state == State.DELIVERED.value)
        .group_by(m.variant)
    ).all()
    return {str(v): int(n) for v, n in rows}


def _per_variant(
    conn: Connection,
    tenant_id: int,
    campaign_id: int,
    table: sa.Table,
    unlinked: sa.Column[int],
    *where: sa.ColumnElement[bool],
) -> dict[str, tuple[int, int]]:
    """``unlinked``: what stands for the person on a row whose contact was erased (negated, so
    it never equals a contact id)."""
    delivered = _delivered(conn, tenant_id, campaign_id)
    c = table.c
    who = sa.func.coalesce(c.contact_id, -unlinked)
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(table, c.variant, sa.func.count(sa.distinct(who)))
        .where(c.campaign_id == campaign_id, *where)
        .group_by(c.variant)
    ).all()
    got = {str(v): int(n) for v, n in rows}
    # A contact can click a message that was delivered after its receipt was counted: never more
    # successes than trials.
    return {v: (min(got.get(v, 0), n), n) for v, n in delivered.items()}


def click_counts(conn: Connection, tenant_id: int, campaign_id: int) -> dict[str, tuple[int, int]]:
    """Per variant: distinct contacts who clicked (people, not bots) of messages delivered."""
    return _per_variant(
        conn, tenant_id, campaign_id, clicks, clicks.c.link_id, clicks.c.bot.is_(None)
    )


def conversion_counts(
    conn: Connection, tenant_id: int, campaign_id: int
) -> dict[str, tuple[int, int]]:
    """Per variant: distinct contacts with an order attributed to the campaign, of delivered."""
    return _per_variant(conn, tenant_id, campaign_id, conversions, conversions.c.id)

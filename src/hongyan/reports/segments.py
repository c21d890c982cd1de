"""A segment's report: the campaign report's figures (:mod:`hongyan.reports.campaigns`) across
every campaign whose audience is the segment (``campaigns.segment_id``), one group per campaign.

The audience a campaign sends to is a snapshot of its segment taken at launch, and a campaign's
segment is fixed once it is launched, so "the campaigns of a segment" is the campaigns that
name it. Contacts are not regrouped by the segment's rule as it is today: that would count the
people who match now, not those the campaigns reached. Campaigns sent to an uploaded list have
no segment and appear in no segment's report.

``campaigns`` replaces the campaign report's ``variants`` (one row per campaign, with its name
and state, also those with no message yet) and ``failures_by_campaign`` its
``failures_by_variant``; clicks by hour after sending are left out (the campaigns started at
different times).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from hongyan.audience import segments
from hongyan.db.scope import TenantScope
from hongyan.db.tables import campaigns, clicks, conversions
from hongyan.db.tables import messages as m
from hongyan.reports.campaigns import Subject, blank_row, report


def segment_report(
    conn: Connection,
    tenant_id: int,
    ref: int | str,
    *,
    timezone: str = "Asia/Shanghai",
    places: bool = True,
) -> dict[str, Any]:
    """The report of a segment (by id or name; not found: 404) over its campaigns."""
    segment = segments.get(conn, tenant_id, ref)
    c = campaigns.c
    found = conn.execute(
        TenantScope(tenant_id)
        .select(campaigns, c.id, c.name, c.state)
        .where(c.segment_id == segment["id"])
        .order_by(c.id)
    ).all()
    ids = [int(r.id) for r in found]
    subject = Subject(
        m.c.campaign_id.in_(ids),
        clicks.c.campaign_id.in_(ids),
        conversions.c.campaign_id.in_(ids),
        group="campaign_id",
    )
    head = {"segment_id": segment["id"], "name": segment["name"]}
    rep = report(conn, tenant_id, subject, head, timezone=timezone, places=places, empty=True)
    assert rep is not None
    per = {row.pop("variant"): row for row in rep.pop("variants")}
    rep["campaigns"] = [
        {"campaign_id": r.id, "name": r.name, "state": r.state, **(per.get(r.id) or blank_row())}
        for r in found
    ]
    rep["failures_by_campaign"] = [
        {"campaign_id": f["variant"], "reason": f["reason"], "count": f["count"]}
        for f in rep.pop("failures_by_variant")
    ]
    rep["clicks_by_hour_after_send"] = []
    return rep

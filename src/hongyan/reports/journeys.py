"""A journey's report: the campaign report's figures (:mod:`hongyan.reports.campaigns`) for the
messages a journey sent, one group per send step, and the journey's enrolments.

A journey's send step plans its messages with source ``journey``, source_ref
``journey:<id>`` and variant ``s<position>`` (:mod:`hongyan.campaigns.journeys`), so the steps
are the report's ``variants`` and ``steps`` names them. A send step's ``{link}`` and
``{coupon}`` are issued with the journey's id and the step as variant, so the clicks on its
links (people and bots apart) and the orders attributed to them (by coupon or last click, see
:mod:`hongyan.tracking.attribution`) are counted per step, read by the partial indexes
``ix_clicks_journey`` and ``ix_conversions_journey``. The journey's own outcome of that kind is in
``enrolments`` (``outcome.converted``: contacts who left on the exit event, e.g. an order,
whether or not the order was attributed to one of its messages).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.campaigns import journeys
from hongyan.db.tables import clicks, conversions
from hongyan.db.tables import messages as m
from hongyan.reports.campaigns import Subject, report


def journey_subject(journey_id: int) -> Subject:
    # source = 'journey' is the predicate of ix_messages_journey.
    return Subject(
        sa.and_(m.c.source == "journey", m.c.source_ref == f"journey:{journey_id}"),
        clicks.c.journey_id == journey_id,
        conversions.c.journey_id == journey_id,
    )


def journey_report(
    conn: Connection,
    tenant_id: int,
    ref: int | str,
    *,
    timezone: str = "Asia/Shanghai",
    places: bool = True,
) -> dict[str, Any]:
    """The report of a journey (by id or name; :class:`~hongyan.campaigns.journeys.
    JourneyNotFound` if none): funnel per step, failures, places, cost, and enrolments."""
    journey = journeys.get(conn, tenant_id, ref)
    head = {
        "journey_id": journey["id"],
        "name": journey["name"],
        "state": journey["state"],
        "enrolments": journey["counts"],
        "steps": [
            {
                "position": s["position"],
                "variant": f"s{s['position']}",
                "template_version_id": s["template_version_id"],
                "link_url": s.get("link_url"),
                "coupon_pool_id": s.get("coupon_pool_id"),
            }
            for s in journey["steps"]
            if s["kind"] == "send"
        ],
    }
    rep = report(
        conn,
        tenant_id,
        journey_subject(journey["id"]),
        head,
        timezone=timezone,
        places=places,
        empty=True,
    )
    assert rep is not None
    return rep

"""Tracking wired to campaigns: a launch issues real short links and coupons per recipient, and
A/B decisions can use clicks and conversions."""

from __future__ import annotations

import re

import sqlalchemy as sa

from hongyan.campaigns import extras
from hongyan.campaigns import service as campaigns
from hongyan.db.scope import unscoped
from hongyan.db.tables import contacts, coupons, links, messages
from hongyan.runtime import Runtime
from hongyan.tracking import coupons as coupon_service
from hongyan.tracking import metrics
from tests.campaigns.support import make_shop
from tests.content.support import approved_version

BODY = "【鸿雁茶饮】{name|您好}，专属券{coupon}已到账，点击{link} 领取，本周有效，回T退订"


def test_a_launch_issues_a_link_and_a_coupon_per_recipient(runtime: Runtime) -> None:
    shop = make_shop(runtime)
    assert extras.active() is not None  # connected by campaigns.service, no test hook
    version = approved_version(runtime, shop.tenant_id, BODY)
    with runtime.engine.begin() as conn:
        pool = coupon_service.create_pool(conn, shop.tenant_id, runtime.clock.now(), name="双11")
        camp = campaigns.create(
            conn,
            runtime.clock,
            runtime.keyring,
            shop.tenant_id,
            name="双11 券",
            segment=shop.segment_id,
            variants=[
                {
                    "template_version_id": version,
                    "link_url": "https://shop.example/1111",
                    "coupon_pool_id": pool,
                }
            ],
            actor="t",
        )
        done = campaigns.launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
    planned = done["counts"]["planned"]
    assert planned > 0
    with runtime.engine.connect() as conn:
        sent = conn.execute(
            unscoped(
                sa.select(
                    messages.c.contact_id,
                    messages.c.body,
                    messages.c.number_province,
                    messages.c.number_city,
                    messages.c.carrier,
                ).where(messages.c.campaign_id == camp["id"]),
                "test",
            )
        ).all()
        issued = {
            r.code: r
            for r in conn.execute(
                unscoped(sa.select(links).where(links.c.campaign_id == camp["id"]), "test")
            )
        }
        places = {
            r.id: (r.number_province, r.number_city, r.carrier)
            for r in conn.execute(unscoped(sa.select(contacts), "test"))
        }
        codes = {
            r.code: r.contact_id
            for r in conn.execute(
                unscoped(sa.select(coupons).where(coupons.c.pool_id == pool), "test")
            )
        }
    assert len(sent) == planned == len(issued) == len(codes)
    # The recipient's place and carrier travel on the message and its link (for the reports).
    assert any(p[0] for p in places.values())
    for contact_id, body, *place in sent:
        assert tuple(place) == places[contact_id]
        link = re.search(r"https://[^/\s]+/([0-9A-Za-z]{7}) ", body)
        assert link is not None, body
        row = issued[link.group(1)]
        assert row.contact_id == contact_id and row.target == "https://shop.example/1111"
        assert (row.number_province, row.number_city, row.carrier) == places[contact_id]
        assert any(code in body and owner == contact_id for code, owner in codes.items())
        assert "{" not in body


def test_click_and_conversion_rates_are_connected() -> None:
    assert campaigns._METRICS["click_rate"] is metrics.click_counts
    assert campaigns._METRICS["conversion_rate"] is metrics.conversion_counts

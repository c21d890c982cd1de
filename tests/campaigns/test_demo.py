"""The demo's campaign and journey: seeded over the demo's contacts, the A/B campaign launches
when the scheduler reaches its time, and the console lists both."""

from __future__ import annotations

from datetime import timedelta

from hongyan.audience import demo as audience_demo
from hongyan.campaigns import demo, journeys
from hongyan.campaigns import service as campaigns
from hongyan.clock import FixedClock
from hongyan.contacts import demo_data
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.content.support import approve_signature, reviewer


def test_demo_campaign_and_journey(runtime: Runtime, clock: FixedClock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(demo_data, "CONTACTS", 600)
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug="demo", name="鸿雁茶饮").id
        approve_signature(conn, clock, tid, "【鸿雁茶饮】")
        who = reviewer(conn, clock)
    demo_data.seed(runtime, tid)
    audience_demo.seed(runtime, tid)
    got = demo.seed(runtime, tid, who)
    with runtime.engine.connect() as conn:
        camp = campaigns.get(conn, tid, got["campaign"])
        journey = journeys.get(conn, tid, got["journey"])
    assert camp["state"] == "scheduled" and len(camp["variants"]) == 3 and camp["ab"]
    assert journey["trigger"] == "add_to_cart" and journey["state"] == "active"
    clock.advance(timedelta(minutes=3))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"launched": 1}
    with runtime.engine.connect() as conn:
        camp = campaigns.get(conn, tid, got["campaign"])
    assert camp["phase"] == "test" and set(camp["counts"]["by_variant"]) == {"A", "B", "C"}

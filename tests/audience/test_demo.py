"""The demo tenant's audiences are seeded with the demo's contacts and give non-empty views."""

from __future__ import annotations

from hongyan.audience import demo, recompute, segments
from hongyan.clock import FixedClock
from hongyan.contacts import demo_data
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants


def test_demo_audiences(runtime: Runtime, clock: FixedClock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(demo_data, "CONTACTS", 600)
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, clock, slug="demo", name="鸿雁茶饮").id
    demo_data.seed(runtime, tid)
    got = demo.seed(runtime, tid)
    assert got["segments"] == 3 and got["buyers"] > 100
    with runtime.engine.connect() as conn:
        saved = segments.list_segments(conn, tid)
        counts = [segments.count(conn, clock, tid, s["rule"]) for s in saved]
        stages = recompute.lifecycle_now(conn, clock, tid)
    assert all(c > 0 for c in counts), counts
    assert all(stages[s] > 0 for s in ("potential", "active", "dormant", "lost")), stages

"""The A/B metrics tracking supplies: clicks and conversions per variant, of delivered messages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from hongyan.tracking import clicks, coupons, metrics
from tests.tracking.support import click_row, contacts_for, issue_for, order, plan_messages

PHONES = [f"+86139{i:08d}" for i in range(10)]


def test_click_and_conversion_rates_per_variant(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, runtime.clock, slug="abtest", name="abtest").id
        pool = coupons.create_pool(conn, tid, runtime.clock.now(), name="abtest")
    ids = contacts_for(runtime, tid, PHONES)
    a, b = ids[:6], ids[6:]
    # A: 5 delivered, 1 failed; B: 4 delivered.
    plan_messages(
        runtime,
        tid,
        5,
        [{"variant": "A", "contact_id": c, "state": "delivered"} for c in a[:5]]
        + [{"variant": "A", "contact_id": a[5], "state": "undelivered"}]
        + [{"variant": "B", "contact_id": c, "state": "delivered"} for c in b],
    )
    issued_a = issue_for(
        runtime, tenant_id=tid, campaign_id=5, variant="A", contact_ids=a, coupon_pool_id=pool
    )
    issue_for(runtime, tenant_id=tid, campaign_id=5, variant="B", contact_ids=b)
    now = runtime.clock.now()

    def click(contact: int, variant: str, bot: str | None = None) -> tuple[int, tuple[Any, ...]]:
        row = click_row(
            link_id=1, campaign_id=5, variant=variant, contact_id=contact, at=now,
            user_agent="UA", bot=bot,
        )  # fmt: skip
        return (tid, row)

    clicks.store_rows(
        runtime.engine,
        [
            click(a[0], "A"),
            click(a[0], "A"),  # twice: one person
            click(a[1], "A"),
            click(a[2], "A", bot="wechat"),  # a link preview: not a person
            click(b[0], "B"),
        ],
    )
    # One of A's recipients buys with the coupon they were sent.
    order(runtime, tid, "o-1", PHONES[3], now + timedelta(hours=1), 5_000, issued_a["coupon"][3])
    with runtime.engine.connect() as conn:
        assert metrics.click_counts(conn, tid, 5) == {"A": (2, 5), "B": (1, 4)}
        assert metrics.conversion_counts(conn, tid, 5) == {"A": (1, 5), "B": (0, 4)}
        assert metrics.click_counts(conn, tid, 6) == {}  # another campaign: nothing

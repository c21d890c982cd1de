"""The issue's "done when": on the carrier sandbox with known click and buy rates, the campaign
report's funnel matches the sandbox's own counts exactly, per variant.

Everything real: the platform (API, console and the redirect route) under uvicorn, a dispatcher
on an SMPP channel to the sandbox SMSC, whose simulated shoppers GET the short links of delivered
messages over HTTP and post order events with the coupons through the events API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa
import uvicorn

from hongyan.api.app import create_app
from hongyan.channels.sandbox.shoppers import ShopperConfig, ShopperRule
from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc, read_record
from hongyan.clock import SystemClock
from hongyan.db import migrate
from hongyan.db.scope import TenantScope
from hongyan.db.tables import messages
from hongyan.dispatch import outbox, service
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane
from hongyan.reports.campaigns import campaign_report
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role
from hongyan.tenants import service as tenants
from hongyan.tracking import coupons
from tests.cli.test_serve import _free_port
from tests.conftest import test_settings as make_settings
from tests.dispatch.conftest import CREDS, smpp_spec
from tests.tracking.support import contacts_for, issue_for

PER_VARIANT = 120
TEXTS = {
    "A": "【鸿雁茶饮】新品上市，点击 {link} 下单用券 {coupon}",
    "B": "【鸿雁茶饮】立减50元，点击 {link} 券码 {coupon}",
}
RULES = (ShopperRule("新品上市", 0.25, 0.3), ShopperRule("立减50元", 0.6, 0.5))


def test_funnel_matches_the_sandbox(tmp_path: Path, database_url: str) -> None:
    runtime = Runtime.create(make_settings(tmp_path, database_url), clock=SystemClock())
    try:
        migrate.upgrade(runtime.engine)
        asyncio.run(_scenario(runtime, tmp_path))
    finally:
        runtime.close()


async def _scenario(runtime: Runtime, tmp_path: Path) -> None:
    with runtime.engine.begin() as conn:
        tid = tenants.create_tenant(conn, runtime.clock, slug="tea", name="鸿雁茶饮").id
        key = apikeys.create(conn, runtime.clock, tid, "shop", Role.OPERATOR).key
        pool = coupons.create_pool(conn, tid, runtime.clock.now(), name="双11", kind="generate")
    phones = [f"+86138{i:08d}" for i in range(2 * PER_VARIANT)]
    ids = contacts_for(runtime, tid, phones)
    for n, variant in enumerate("AB"):
        chunk = slice(n * PER_VARIANT, (n + 1) * PER_VARIANT)
        issued = issue_for(
            runtime,
            tenant_id=tid,
            campaign_id=1,
            variant=variant,
            contact_ids=ids[chunk],
            link_url="https://shop.example/1111",
            coupon_pool_id=pool,
        )
        with runtime.engine.begin() as conn:
            for phone, cid, link, coupon in zip(
                phones[chunk], ids[chunk], issued["link"], issued["coupon"], strict=True
            ):
                text = TEXTS[variant].format(link=link, coupon=coupon)
                new = NewMessage(
                    phone, text, lane=Lane.NOTIFICATION, source="campaign",
                    campaign_id=1, variant=variant, contact_id=cid,
                )  # fmt: skip
                outbox.enqueue(conn, runtime.clock, runtime.keyring, tid, new, max_parts=3)

    port, smsc_port = _free_port(), _free_port()
    record = tmp_path / "carrier.jsonl"
    smsc = SandboxSmsc(
        SandboxConfig(
            port=smsc_port,
            credentials=CREDS,
            receipt_delay=0.2,
            delivered=0.85,
            undeliverable=0.1,
            rejected=0.05,
            seed=8,
            record_path=record,
            shoppers=ShopperConfig(
                base_url=f"http://127.0.0.1:{port}", api_key=key, rules=RULES, delay=0.1, seed=8
            ),
        )
    )
    await smsc.start()
    spec = smpp_spec("sandbox", "127.0.0.1", smsc_port)

    async def dispatcher(stop: asyncio.Event) -> None:
        await service.run(runtime, stop, extra=[spec], idle=0.05)

    app = create_app(runtime, [dispatcher])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 120
        while True:
            await asyncio.sleep(0.5)
            with runtime.engine.connect() as conn:
                open_ = conn.execute(
                    TenantScope(tid)
                    .select(messages, sa.func.count())
                    .where(messages.c.state.in_(("planned", "sending", "submitted")))
                ).scalar_one()
            assert smsc.shoppers is not None
            if open_ == 0 and smsc.shoppers.busy == 0:
                break
            assert time.monotonic() < deadline, (
                f"{open_} messages open, {smsc.shoppers.busy} shoppers"
            )
    finally:
        server.should_exit = True
        await serving
        await smsc.stop()

    shoppers = smsc.shoppers
    assert shoppers is not None and not shoppers.errors, shoppers.errors
    rows = read_record(record)
    delivered = {
        r["message_id"] for r in rows if r["kind"] == "receipt" and r.get("stat") == "DELIVRD"
    }
    by_text = {r["message_id"]: r["text"] for r in rows if r["kind"] == "submit"}
    with runtime.engine.connect() as conn:
        rep = campaign_report(conn, tid, 1)
    t = rep["totals"]
    assert t["planned"] == t["sent"] == 2 * PER_VARIANT
    assert t["delivered"] == len(delivered)
    assert t["failed"] == 2 * PER_VARIANT - len(delivered)
    assert t["clicks_unique"] == t["clicks_total"] == sum(shoppers.clicks.values())
    assert t["conversions"] == sum(shoppers.buys.values())
    assert t["revenue_fen"] == sum(shoppers.revenue_fen.values())
    assert t["conversions_coupon"] == t["conversions"]  # every buyer used the coupon
    for v in rep["variants"]:
        rule = RULES[0 if v["variant"] == "A" else 1].contains
        sent_delivered = sum(1 for mid in delivered if rule in by_text[mid])
        assert v["delivered"] == sent_delivered
        assert v["clicks_unique"] == shoppers.clicks[rule]
        assert v["conversions"] == shoppers.buys[rule]
        assert v["revenue_fen"] == shoppers.revenue_fen[rule]
    a, b = rep["variants"]
    assert b["conversion_rate"] > a["conversion_rate"] > 0  # the planted better variant shows
    assert sum(1 for r in rows if r["kind"] == "click") == t["clicks_unique"]
    assert sum(1 for r in rows if r["kind"] == "buy") == t["conversions"]

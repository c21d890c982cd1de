"""The demo tenant's campaigns: a scheduled campaign to dormant customers with an A/B test of
three variants (it launches a few minutes after the demo starts, the sandbox delivers, and the
scheduler picks the winner by click rate: the sandbox's recipients click and buy, see
``SHOPPERS``), and a cart-abandonment journey (an offer an hour
after a cart is abandoned, unless an order comes first, with a short link to the cart whose
clicks count in the journey's report)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hongyan.audience import segments
from hongyan.campaigns import journeys
from hongyan.campaigns import service as campaigns
from hongyan.channels.sandbox.shoppers import ShopperRule
from hongyan.content import review
from hongyan.content import service as content_service
from hongyan.content import templates as content_templates
from hongyan.runtime import Runtime
from hongyan.staff.service import StaffPrincipal
from hongyan.tenants import service as tenants
from hongyan.tracking import coupons

VARIANTS = (
    (
        "唤醒·满减",
        "【鸿雁茶饮】{name|您好}，好久不见！满30减10券{coupon}，7天内有效 {link} 回T退订",
    ),
    (
        "唤醒·第二杯",
        "【鸿雁茶饮】{name|您好}，想念您的味道，第二杯半价券{coupon}，本周有效 {link} 回T退订",
    ),
    (
        "唤醒·新品",
        "【鸿雁茶饮】{name|您好}，新品桂花乌龙上市，立减5元券{coupon}，本周有效 {link} 回T退订",
    ),
)
#: Where the variants' links go (the shop's own page).
LINK_URL = "https://shop.example/hongyan-tea"
CART_URL = "https://shop.example/hongyan-tea/cart"  # the cart journey's {link}
#: How the sandbox's recipients answer each variant (click rate, then buy rate of clickers):
#: 第二杯半价 is the planted better variant, so the A/B test has a true winner to find.
SHOPPERS = (
    ShopperRule("满30减10", 0.25, 0.3),
    ShopperRule("第二杯半价", 0.45, 0.5),
    ShopperRule("桂花乌龙", 0.2, 0.25),
)
CART = ("加购提醒", "【鸿雁茶饮】{name|您好}，购物车的饮品还在等您，点{link} 下单立减3元，回T退订")
DORMANT = {
    "all": [
        {"field": "lifecycle", "op": "in", "value": ["dormant", "lapsing"]},
        {"field": "consent", "op": "granted", "value": "marketing"},
    ]
}


def _approved(
    runtime: Runtime, conn: Any, tenant_id: int, reviewer: StaffPrincipal, name: str, body: str
) -> int:
    clock = runtime.clock
    made = content_templates.create(
        conn, clock, tenant_id, name=name, category="marketing", body=body, actor="demo"
    )
    ctx = content_service.context(conn, tenant_id, "marketing")
    content_templates.submit(conn, clock, tenant_id, made["id"], ctx, actor="demo")
    review.decide_template(conn, clock, reviewer, int(made["versions"][0]["id"]), approve=True)
    return int(made["id"])


def seed(runtime: Runtime, tenant_id: int, reviewer: StaffPrincipal) -> dict[str, Any]:
    clock = runtime.clock
    with runtime.engine.begin() as conn:
        ids = [_approved(runtime, conn, tenant_id, reviewer, n, b) for n, b in VARIANTS]
        pool = coupons.create_pool(conn, tenant_id, clock.now(), name="唤醒券", amount_fen=1000)
        cart = _approved(runtime, conn, tenant_id, reviewer, *CART)
        seg = segments.create(
            conn, clock, tenant_id, name="沉睡客户（已授权）", rule=DORMANT,
            description="久未下单、同意接收营销短信的客户：唤醒活动的对象", actor="demo",
        )  # fmt: skip
        zone = dt.UTC
        tz = tenants.get_tenant_by_id(conn, tenant_id).timezone
        start = (clock.now() + dt.timedelta(minutes=3)).astimezone(zone)
        camp = campaigns.create(
            conn, clock, runtime.keyring, tenant_id, name="唤醒沉睡客户",
            segment=int(seg["id"]),
            variants=[
                {"template_id": i, "link_url": LINK_URL, "coupon_pool_id": pool} for i in ids
            ],
            schedule={"kind": "at", "at": start.isoformat()},
            ab={"share": 0.1, "metric": "click_rate", "wait_hours": 0.25, "min_trials": 20},
            actor="demo",
        )  # fmt: skip
        campaigns.launch(conn, clock, runtime.keyring, tenant_id, camp["id"], actor="demo")
        journey = journeys.create(
            conn, clock, tenant_id, name="购物车挽回", trigger="add_to_cart", exit_on="order",
            steps=[
                {"kind": "wait", "minutes": 60},
                {"kind": "condition", "rule": {"field": "consent", "op": "granted",
                                               "value": "marketing"}},
                {"kind": "send", "template_id": cart, "link_url": CART_URL},
            ],
            actor="demo",
        )  # fmt: skip
    return {"campaign": camp["id"], "journey": journey["id"], "zone": tz}

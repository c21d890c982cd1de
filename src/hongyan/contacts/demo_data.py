"""The demo tenant's customers: 20,000 synthetic contacts with consent and a year of behaviour.

Generated with a fixed seed, and loaded through the same paths a tenant uses (a CSV import, then
event batches), so the demo shows what the platform really does with such data. The mix, for a
tea-drinks chain:

* loyal repeat buyers (8 %): an order every 2½–6½ weeks all year, browsing before half of them;
* occasional buyers (22 %): 2–5 orders spread over the year;
* one-time buyers (18 %): a single order;
* dormant customers (14 %): ordered before, nothing for 90–180 days;
* lost customers (10 %): no interaction at all for more than 180 days;
* browsers who never buy (20 %): browsing, favourites and abandoned carts, no order;
* new customers (8 %): registered in the last 30 days, at most a first order.

Every contact registered (an event); 90 % of orders are signed for 1–3 days later.
Amounts follow a log-normal around ¥38 (a drink or two), in fen. Interest tags are the
shop's categories. About 1 % of the numbers opted out earlier and stay suppressed.
"""

from __future__ import annotations

import io
import math
import random
from datetime import datetime, timedelta
from typing import Any

from hongyan.contacts import events, importer, service, suppression
from hongyan.runtime import Runtime

CONTACTS = 20_000
SEED = 18
CATEGORIES = ("奶茶", "果茶", "纯茶", "咖啡", "轻食", "甜品", "周边")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华慧巧美雪琳晨宇浩然子涵欣怡梓轩"
CITIES = (
    ("上海", "上海"), ("北京", "北京"), ("广东", "广州"), ("广东", "深圳"), ("浙江", "杭州"),
    ("四川", "成都"), ("湖北", "武汉"), ("江苏", "南京"), ("陕西", "西安"), ("重庆", "重庆"),
)  # fmt: skip
SEGMENTS = ("138", "139", "135", "136", "186", "185", "189", "177", "166", "199", "198", "191")
LEVELS = ("普通", "银卡", "金卡", "钻石")
MIX = (
    ("loyal", 0.08),
    ("occasional", 0.22),
    ("once", 0.18),
    ("dormant", 0.14),
    ("lost", 0.10),
    ("browser", 0.20),
    ("new", 0.08),
)


def _kinds(rng: random.Random) -> list[str]:
    out: list[str] = []
    for kind, share in MIX:
        out += [kind] * round(share * CONTACTS)
    out = (out + ["occasional"] * CONTACTS)[:CONTACTS]
    rng.shuffle(out)
    return out


def _amount(rng: random.Random) -> int:
    return max(900, int(round(math.exp(rng.gauss(math.log(3800), 0.45)), -1)))


def contacts_csv(rng: random.Random, numbers: list[str]) -> bytes:
    lines = ["手机号,姓名,性别,生日,省份,城市,会员等级,积分"]
    for n in numbers:
        female = rng.random() < 0.62
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        year = rng.choice(range(1965, 2007))
        born = f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        province, city = rng.choice(CITIES)
        level = rng.choices(LEVELS, weights=(60, 25, 12, 3))[0]
        points = rng.randrange(0, 5000)
        lines.append(
            f"{n},{name},{'女' if female else '男'},{born},{province},{city},{level},{points}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _event(i: int, kind: str, phone: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"demo-{i}", "kind": kind, "phone": phone, "occurred_at": at, **extra}


def behaviour(rng: random.Random, numbers: list[str], now: datetime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    year = timedelta(days=365)

    def add(kind: str, phone: str, at: datetime, **extra: Any) -> None:
        if at <= now:
            out.append(_event(len(out), kind, phone, at, **extra))

    def visit(phone: str, at: datetime, buy: bool, likes: list[str]) -> None:
        tag = rng.choice(likes)
        if not buy or rng.random() < 0.5:
            add("browse", phone, at - timedelta(minutes=rng.randrange(5, 120)), tags=[tag])
        if rng.random() < 0.15:
            add("favourite", phone, at - timedelta(minutes=rng.randrange(1, 5)), tags=[tag])
        if buy:
            if rng.random() < 0.3:
                add("add_to_cart", phone, at - timedelta(minutes=rng.randrange(1, 5)), tags=[tag])
            order = f"T{len(out):07d}"
            coupon = f"C{rng.randrange(10**5):05d}" if rng.random() < 0.2 else None
            add(
                "order", phone, at, amount_fen=_amount(rng), order_id=order,
                coupon_code=coupon, tags=[tag],
            )  # fmt: skip
            if rng.random() < 0.9:
                add("order_signed", phone, at + timedelta(days=rng.uniform(1, 3)), order_id=order)
        elif rng.random() < 0.3:
            add("add_to_cart", phone, at, tags=[tag])  # an abandoned cart

    for phone, kind in zip(numbers, _kinds(rng), strict=False):
        likes = rng.sample(CATEGORIES, rng.choice((1, 2, 3)))
        if kind == "new":
            joined = now - timedelta(days=rng.uniform(0, 30))
        else:
            joined = now - year - timedelta(days=rng.uniform(0, 365))
        add("registration", phone, joined)
        start = max(joined, now - year)
        if kind == "loyal":
            at = start + timedelta(days=rng.uniform(0, 20))
            while at < now:
                visit(phone, at, True, likes)
                at += timedelta(days=rng.uniform(18, 45))
        elif kind in ("occasional", "once"):
            for _ in range(rng.randrange(2, 6) if kind == "occasional" else 1):
                visit(phone, now - timedelta(days=rng.uniform(0, 330)), True, likes)
        elif kind == "dormant":
            for _ in range(rng.randrange(1, 4)):
                visit(phone, now - timedelta(days=rng.uniform(95, 175)), True, likes)
        elif kind == "lost":
            visit(phone, now - timedelta(days=rng.uniform(190, 360)), rng.random() < 0.6, likes)
        elif kind == "browser":
            for _ in range(rng.randrange(1, 6)):
                visit(phone, now - timedelta(days=rng.uniform(0, 300)), False, likes)
        elif rng.random() < 0.5:  # new: maybe a first order
            visit(phone, joined + timedelta(days=rng.uniform(0, 3)), True, likes)
    return out


def seed(runtime: Runtime, tenant_id: int) -> dict[str, int]:
    """Load the demo tenant's contacts and a year of events; returns what was loaded."""
    from zoneinfo import ZoneInfo

    rng = random.Random(SEED)  # noqa: S311 (synthetic demo data, reproducible on purpose)
    numbers = sorted(
        {f"{rng.choice(SEGMENTS)}{rng.randrange(10**8):08d}" for _ in range(CONTACTS + 200)}
    )[:CONTACTS]
    rng.shuffle(numbers)
    opted_out = numbers[: CONTACTS // 100]
    with runtime.engine.begin() as conn:
        suppression.add(
            conn,
            runtime.clock,
            runtime.keyring,
            [
                suppression.NewSuppression(tenant_id, "+86" + n, "opt_out", "reply", "TD")
                for n in opted_out
            ],
        )
    result = service.import_stream(
        runtime,
        tenant_id,
        io.BytesIO(contacts_csv(rng, numbers)),
        "demo-members.csv",
        importer.ImportOptions(
            mapping={"积分": "attr:积分:number"},
            consent_source="会员注册",
            consent_proof="小程序注册页勾选“同意接收会员优惠短信”",
            tags=("会员",),
            actor="demo",
            source="demo",
        ),
    )
    now = runtime.clock.now()
    raw = behaviour(rng, numbers, now)
    tz = ZoneInfo("Asia/Shanghai")
    accepted = 0
    for start in range(0, len(raw), 5000):
        parsed = [events.parse_event(e, tz, now=now) for e in raw[start : start + 5000]]
        with runtime.engine.begin() as conn:
            accepted += events.ingest(
                conn, runtime.clock, runtime.keyring, tenant_id, parsed
            ).accepted
    return {"contacts": result.imported, "suppressed": result.suppressed, "events": accepted}

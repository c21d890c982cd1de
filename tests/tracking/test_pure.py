"""Pure tracking logic: codes, bot detection, the miss limiter, attribution rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hongyan.content.fields import COUPON_LENGTH, SHORT_LINK_LENGTH
from hongyan.tracking import bots, codes
from hongyan.tracking.attribution import ClickRef, CouponState, Order, decide, order_key
from hongyan.tracking.ratelimit import MissLimiter

T0 = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def test_codes_have_the_lengths_the_lint_counts() -> None:
    for _ in range(200):
        code = codes.new_link_code()
        assert codes.is_link_code(code)
        assert len(codes.short_url(codes.DEFAULT_LINK_BASE, code)) == SHORT_LINK_LENGTH
        coupon = codes.new_coupon_code()
        assert len(coupon) == COUPON_LENGTH
        assert set(coupon) <= set(codes.COUPON_ALPHABET)
        assert codes.coupons_in(f"【茶】券码{coupon}，到店出示") == [coupon]


def test_coupon_alphabet_has_no_look_alikes() -> None:
    for ch in "01OIL":
        assert ch not in codes.COUPON_ALPHABET
    assert codes.normalise_coupon(" hy8k-2m4q ") == "HY8K2M4Q"


@given(st.text(max_size=12))
def test_link_code_shape(text: str) -> None:
    ok = codes.is_link_code(text)
    assert ok == (len(text) == 7 and all(c in codes.LINK_ALPHABET for c in text))


def test_link_base_checks() -> None:
    assert codes.link_base_problem("https://t.example") is None
    assert codes.link_base_problem("http://localhost:8000") is None
    assert codes.link_base_problem("https://t.example/path") is not None
    assert codes.link_base_problem("ftp://t.example") is not None
    assert codes.link_base_problem("https://nodot") is not None


def test_bots_and_people() -> None:
    person = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44 NetType/WIFI Language/zh_CN"
    )
    assert bots.classify("GET", person) is None
    assert bots.classify("GET", "Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile") is None
    assert bots.classify("HEAD", person) == "head"
    assert bots.classify("GET", "") == "empty"
    assert bots.classify("GET", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)") == (
        "preview"
    )
    assert bots.classify("GET", "Twitterbot/1.0") == "preview"
    assert bots.classify("GET", "Mozilla/5.0 (compatible; WeChat link preview)") == "preview"
    assert bots.classify("GET", "TelegramBot (like TwitterBot)") == "preview"
    assert bots.classify("GET", "curl/8.5.0") == "tool"
    assert bots.classify("GET", "python-requests/2.31") == "tool"
    assert bots.classify("GET", "Mozilla/5.0 (compatible; Googlebot/2.1)") == "tool"
    assert bots.classify("GET", "Mozilla/5.0 Barracuda Sentinel (EE)") == "scanner"
    assert bots.classify("GET", "Mozilla/5.0 (compatible; urlscan.io)") == "scanner"


def test_miss_limiter_blocks_a_flood_then_forgets() -> None:
    lim = MissLimiter(limit=3, window=10.0, max_addresses=2)
    a, b = b"1.1.1.1", b"2.2.2.2"
    for i in range(3):
        assert not lim.blocked(a, float(i))
        lim.miss(a, float(i))
    assert lim.blocked(a, 3.0)
    assert not lim.blocked(b, 3.0)
    assert not lim.blocked(a, 10.5)  # the window ended
    lim.miss(a, 11.0)
    lim.miss(b, 11.0)
    lim.miss(b"3.3.3.3", 11.0)  # bounded: the oldest address is forgotten
    assert len(lim._seen) == 2


def _order(key: str, contact: int, at: datetime, coupon: str | None = None) -> Order:
    return Order(key, key, contact, at, 1000, coupon)


def test_decide_attributes_journey_coupons_and_clicks_to_the_journey() -> None:
    """A journey's coupon or link converts to the journey and its step, as a campaign's does;
    an order converts once, to one of them."""
    coupons = {"JRNY2222": CouponState(1, "issued", None, "s0", None, journey_id=3)}
    clicks = {
        10: [
            ClickRef(100, 10, T0 - timedelta(days=2), 6, "A"),  # a campaign's link
            ClickRef(101, 10, T0 - timedelta(days=1), None, "s2", journey_id=3),  # the last
        ]
    }
    orders = [
        _order("o1", 11, T0, "JRNY2222"),
        _order("o2", 10, T0),
        _order("o2", 10, T0),  # the same order again
        _order("o3", 12, T0, "JRNY2222"),  # the coupon again: used, and 12 clicked nothing
    ]
    d = decide(orders, coupons, clicks, WEEK)
    got = {c.order.key: (c.method, c.campaign_id, c.journey_id, c.variant) for c in d.conversions}
    assert got == {"o1": ("coupon", None, 3, "s0"), "o2": ("click", None, 3, "s2")}
    assert [(r.order.key, r.reason) for r in d.rejections] == [("o3", "used")]


def test_decide_coupon_first_then_last_click_within_window() -> None:
    coupons = {
        "AAAA2222": CouponState(1, "issued", 7, "A", None),
        "BBBB3333": CouponState(2, "redeemed", 7, "A", None),
        "CCCC4444": CouponState(3, "available", None, None, None),
        "DDDD5555": CouponState(4, "issued", 7, "B", T0 - timedelta(hours=1)),
    }
    clicks = {
        10: [
            ClickRef(100, 10, T0 - timedelta(days=8), 5, "A"),  # outside the window
            ClickRef(101, 10, T0 - timedelta(days=2), 6, "B"),
            ClickRef(102, 10, T0 - timedelta(days=1), 6, "A"),  # the last one
            ClickRef(103, 10, T0 + timedelta(hours=1), 6, "B"),  # after the order
        ]
    }
    orders = [
        _order("o1", 10, T0, "AAAA2222"),
        _order("o2", 10, T0 + timedelta(minutes=1), "AAAA2222"),  # used in this batch
        _order("o3", 11, T0, "BBBB3333"),
        _order("o4", 11, T0, "CCCC4444"),
        _order("o5", 11, T0, "DDDD5555"),
        _order("o6", 11, T0, "ZZZZ9999"),
        _order("o7", 10, T0),
        _order("o7", 10, T0),  # the same order again
        _order("o8", 12, T0),  # no click, no coupon
        _order("o9", 10, T0),  # converted before
    ]
    d = decide(orders, coupons, clicks, WEEK, {"o9"})
    got = {c.order.key: (c.method, c.campaign_id, c.variant) for c in d.conversions}
    assert got == {
        "o1": ("coupon", 7, "A"),
        "o2": ("click", 6, "A"),
        "o7": ("click", 6, "A"),
    }
    assert {(r.order.key, r.reason) for r in d.rejections} == {
        ("o2", "used"),
        ("o3", "used"),
        ("o4", "not_issued"),
        ("o5", "expired"),
        ("o6", "unknown"),
    }


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-10 * 24, 2 * 24), st.integers(0, 4)),
        max_size=30,
    ),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3), st.integers(-48, 48)), max_size=20),
)
def test_decide_never_twice_and_clicks_in_window(
    raw_clicks: list[tuple[int, int, int]], raw_orders: list[tuple[int, int, int]]
) -> None:
    by_contact: dict[int, list[ClickRef]] = {}
    for i, (contact, hours, campaign) in enumerate(raw_clicks):
        ref = ClickRef(i, contact, T0 + timedelta(hours=hours), campaign, None)
        by_contact.setdefault(contact, []).append(ref)
    orders = [_order(f"k{k}", c, T0 + timedelta(hours=h)) for k, c, h in raw_orders]
    d = decide(orders, {}, by_contact, WEEK)
    keys = [c.order.key for c in d.conversions]
    assert len(keys) == len(set(keys))
    for conv in d.conversions:
        click = next(c for c in by_contact[conv.order.contact_id] if c.id == conv.click_id)
        assert conv.order.at - WEEK <= click.at <= conv.order.at
        later = [c for c in by_contact[conv.order.contact_id] if click.at < c.at <= conv.order.at]
        assert not later


def test_order_key() -> None:
    assert order_key("A1", "e1") == "A1"
    assert order_key(None, "e1") == "event:e1"


def test_export_escapes_formula_cells() -> None:
    from hongyan.reports.export import escape, to_csv

    assert [escape(v) for v in ("=SUM(A1)", "+1", "-x", "@a", "北京", 5, -3.5, None)] == [
        "'=SUM(A1)", "'+1", "'-x", "'@a", "北京", 5, -3.5, None,
    ]  # fmt: skip
    blank = {k: 0 for k in ("planned", "sent", "delivered")}
    report = {
        "totals": blank,
        "variants": [{"variant": "=HYPERLINK(1)", **blank}],
        "failures_by_variant": [{"variant": "A", "reason": "@evil", "count": 1}],
        "provinces": [{"province": "+cmd", **blank}],
        "cities": [],
        "carriers": [],
        "clicks_by_hour_after_send": [],
        "clicks_by_hour_of_day": [],
    }
    text = to_csv(report).decode("utf-8-sig")
    assert "'=HYPERLINK(1)" in text and "'@evil" in text and "'+cmd" in text


def test_shopper_rules_and_plans() -> None:
    import random

    import pytest

    from hongyan.channels.sandbox.shoppers import ShopperConfig, parse_rule, plan

    rule = parse_rule("立减50元:0.6:0.4")
    assert (rule.contains, rule.click, rule.buy) == ("立减50元", 0.6, 0.4)
    assert parse_rule("a:b:0.1:0.2").contains == "a:b"
    with pytest.raises(ValueError):
        parse_rule("x:2:0")
    cfg = ShopperConfig("http://x", "k", (parse_rule("always:1:1"), parse_rule("never:0:0")))
    rng = random.Random(1)
    text = "【茶】always 点击 https://hy.cx/Ab3dE6f 券码 HY8K2M4Q 回T退订"
    p = plan(cfg, rng, "8613800000001", text, 1)
    assert p is not None and (p.code, p.coupon, p.buys) == ("Ab3dE6f", "HY8K2M4Q", True)
    assert plan(cfg, rng, "8613800000001", text.replace("always", "never"), 2) is None
    assert plan(cfg, rng, "8613800000001", "always no link", 3) is None

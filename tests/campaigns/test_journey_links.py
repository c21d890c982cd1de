"""A journey's send step with ``{link}`` and ``{coupon}``, on SQLite and PostgreSQL: each
recipient gets their own short link and coupon through the campaigns' hook, clicks through the
redirector and orders by coupon or last click are attributed to the journey's step (once), the
journey's report counts them, a short coupon pool leaves nothing half-issued, and bad steps are
refused with a 422 before anything is stored."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.campaigns import caps, journeys
from hongyan.clock import FixedClock
from hongyan.contacts import events
from hongyan.contacts import service as contacts
from hongyan.db.scope import TenantScope
from hongyan.db.tables import clicks, conversions, coupon_rejections, coupons, links, messages
from hongyan.errors import ValidationFailed
from hongyan.reports.journeys import journey_report
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from hongyan.tracking import coupons as coupon_service
from tests.api.test_api import auth
from tests.campaigns.support import Shop, make_shop
from tests.campaigns.test_journeys import _template_id
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)
from tests.content.support import approved_version
from tests.reports.support import console_user, make_key
from tests.web.test_console import login

LINK_AND_COUPON = (
    "【鸿雁茶饮】{name|您好}，购物车的宝贝还在，专属券{coupon}已到账，点击{link} 领取，回T退订"
)
LINK_ONLY = "【鸿雁茶饮】{name|您好}，购物车里的宝贝还在等您，点击 {link} 查看，回T退订"
COUPON_ONLY = "【鸿雁茶饮】{name|您好}，券码{coupon}已到账，7天内有效，回T退订"
PERSON = "Mozilla/5.0 (iPhone) Mobile MicroMessenger/8.0"
TARGET = "https://shop.example/cart?from=sms"


@pytest.fixture
def shop(runtime: Runtime) -> Shop:
    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, runtime.clock, shop.tenant_id, {"default": [10, 30], "new": [10, 30]})
    return shop


def _pool(runtime: Runtime, shop: Shop, kind: str, codes: list[str] | None = None) -> int:
    with runtime.engine.begin() as conn:
        pool = coupon_service.create_pool(
            conn, shop.tenant_id, runtime.clock.now(), name=f"券-{kind}-{len(codes or [])}",
            kind=kind,
        )  # fmt: skip
        if codes:
            coupon_service.import_codes(conn, shop.tenant_id, pool, codes)
    return pool


def _journey(
    runtime: Runtime, shop: Shop, body: str, *, name: str = "购物车挽回", **step: Any
) -> dict[str, Any]:
    tid = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, body))
    with runtime.engine.begin() as conn:
        j = journeys.create(
            conn, runtime.clock, shop.tenant_id, actor="t", name=name, trigger="add_to_cart",
            steps=[{"kind": "send", "template_id": tid, **step}],
        )  # fmt: skip
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(minutes=1))  # events after the journey was made
    return j


def _carts(runtime: Runtime, shop: Shop, idx: list[int], tag: str = "cart") -> None:
    """Add-to-cart events for these contacts, a second apart (their due order)."""
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, shop.tenant_id,
            [
                events.Event(f"{tag}{i}", "add_to_cart", shop.phones[i],
                             now - timedelta(seconds=len(idx) - k))
                for k, i in enumerate(idx)
            ],
        )  # fmt: skip


def _order(
    runtime: Runtime, shop: Shop, order_id: str, i: int, amount: int, coupon: str | None = None
) -> None:
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, shop.tenant_id,
            [events.Event(order_id, "order", shop.phones[i], runtime.clock.now(),
                          order_id=order_id, amount_fen=amount, coupon_code=coupon)],
        )  # fmt: skip


def _rows(runtime: Runtime, shop: Shop, table: sa.Table) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(TenantScope(shop.tenant_id).select(table).order_by(table.c.id)))


def _contact(runtime: Runtime, shop: Shop, i: int) -> int:
    with runtime.engine.connect() as conn:
        found = contacts.find_id(conn, runtime.keyring, shop.tenant_id, shop.phones[i])
    assert found is not None
    return int(found)


def test_a_link_and_coupon_step_is_tracked_into_the_journey_report(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    pool = _pool(runtime, shop, "generate")
    j = _journey(runtime, shop, LINK_AND_COUPON, link_url=TARGET, coupon_pool_id=pool)
    assert (j["steps"][0]["link_url"], j["steps"][0]["coupon_pool_id"]) == (TARGET, pool)
    _carts(runtime, shop, [1, 2, 3, 4])  # sent at once, in the ingest
    sent = _rows(runtime, shop, messages)
    issued = _rows(runtime, shop, links)
    given = _rows(runtime, shop, coupons)
    assert len(sent) == len(issued) == len(given) == 4
    by_contact = {m.contact_id: m for m in sent}
    assert set(by_contact) == {_contact(runtime, shop, i) for i in (1, 2, 3, 4)}
    # each recipient's own link and coupon, in their own message
    for link in issued:
        assert (link.journey_id, link.campaign_id, link.variant) == (j["id"], None, "s0")
        assert link.target == TARGET and link.code in by_contact[link.contact_id].body
    for c in given:
        assert (c.journey_id, c.campaign_id, c.variant, c.state) == (j["id"], None, "s0", "issued")
        assert c.code in by_contact[c.contact_id].body
    assert len({link.code for link in issued}) == len({c.code for c in given}) == 4

    code_of = {link.contact_id: link.code for link in issued}
    coupon_of = {c.contact_id: c.code for c in given}
    one, two, three = (_contact(runtime, shop, i) for i in (1, 2, 3))
    # the redirector handles a journey's link as a campaign's: a person twice, a preview once
    for ua in (PERSON, PERSON, "Slackbot-LinkExpanding 1.0"):
        r = client.get(f"/{code_of[one]}", headers={"user-agent": ua}, follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == TARGET
    r = client.get(f"/{code_of[three]}", headers={"user-agent": PERSON}, follow_redirects=False)
    assert r.status_code == 302
    got = _rows(runtime, shop, clicks)
    assert {(c.journey_id, c.campaign_id, c.variant) for c in got} == {(j["id"], None, "s0")}
    assert [c.bot for c in got] == [None, None, "preview", None]

    runtime.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    _order(runtime, shop, "o1", 1, 19900)  # no coupon: 1's last click converts it
    _order(runtime, shop, "o2", 2, 5000, coupon_of[two])  # 2's coupon
    _order(runtime, shop, "o2", 2, 5000, coupon_of[two])  # the same order sent again
    _order(runtime, shop, "o3", 4, 3000, coupon_of[two])  # 2's coupon once more (forwarded)
    done = _rows(runtime, shop, conversions)
    assert sorted(
        (c.order_key, c.method, c.journey_id, c.campaign_id, c.variant) for c in done
    ) == [
        ("o1", "click", j["id"], None, "s0"),
        ("o2", "coupon", j["id"], None, "s0"),
    ]
    assert [(r.order_key, r.reason) for r in _rows(runtime, shop, coupon_rejections)] == [
        ("o3", "used")
    ]
    with runtime.engine.connect() as conn:
        rep = journey_report(conn, shop.tenant_id, j["id"])
    tot = rep["totals"]
    assert (tot["planned"], tot["clicks_total"], tot["clicks_unique"], tot["bot_clicks"]) == (
        4, 3, 2, 1,
    )  # fmt: skip
    assert (tot["conversions"], tot["revenue_fen"]) == (2, 24900)
    (step,) = rep["variants"]
    assert step["variant"] == "s0" and step["clicks_unique"] == 2 and step["conversions"] == 2
    assert rep["steps"][0]["link_url"] == TARGET and rep["steps"][0]["coupon_pool_id"] == pool
    assert sum(p["clicks"] for p in rep["clicks_by_hour_of_day"]) == 3
    # the same through the API
    key = make_key(runtime, shop.tenant_id, Role.ANALYST)
    api = client.get(f"/api/v1/reports/journeys/{j['id']}", headers=auth(key))
    assert api.status_code == 200, api.text
    assert api.json()["totals"]["conversions"] == 2 and api.json()["totals"]["clicks_unique"] == 2
    # and the console's journey report page
    login(client, console_user(runtime, shop.tenant_id))
    html = client.get(f"/console/reports/journeys/{j['id']}").text
    assert re.search(r'data-step="clicked"><td>[^<]+</td><td class="num">2</td>', html)
    assert re.search(r'data-step="converted"><td>[^<]+</td><td class="num">2</td>', html)
    assert '<tr data-variant="s0">' in html and ">249.00</td>" in html


def test_a_coupon_step_issues_unique_codes_from_an_imported_pool(
    runtime: Runtime, shop: Shop
) -> None:
    pool = _pool(runtime, shop, "import", ["CART0001", "CART0002", "CART0003", "CART0004"])
    j = _journey(runtime, shop, COUPON_ONLY, coupon_pool_id=pool)
    _carts(runtime, shop, [1, 2, 3])
    given = [c for c in _rows(runtime, shop, coupons) if c.state == "issued"]
    assert len(given) == 3 and len({c.code for c in given}) == 3
    assert {c.journey_id for c in given} == {j["id"]} and {c.variant for c in given} == {"s0"}
    bodies = {m.contact_id: m.body for m in _rows(runtime, shop, messages)}
    assert all(c.code in bodies[c.contact_id] for c in given)
    assert _rows(runtime, shop, links) == []  # no {link}: no link
    # the order converts to the journey by its coupon, whoever buys
    two = next(c for c in given if c.contact_id == _contact(runtime, shop, 2))
    _order(runtime, shop, "o9", 5, 8800, two.code.lower())
    (conv,) = _rows(runtime, shop, conversions)
    assert (conv.method, conv.journey_id, conv.variant, conv.coupon_id) == (
        "coupon", j["id"], "s0", two.id,
    )  # fmt: skip


def test_an_exhausted_pool_leaves_nothing_half_issued(runtime: Runtime, shop: Shop) -> None:
    pool = _pool(runtime, shop, "import", ["LAST0001", "LAST0002"])
    j = _journey(runtime, shop, LINK_AND_COUPON, link_url=TARGET, coupon_pool_id=pool)
    _carts(runtime, shop, [1, 2, 3, 4])
    # The pool holds two codes: the first two due get their message, link and coupon; the
    # others leave with the reason, with no link, coupon or message of theirs written.
    sent = _rows(runtime, shop, messages)
    issued = _rows(runtime, shop, links)
    given = [c for c in _rows(runtime, shop, coupons) if c.state == "issued"]
    first_two = {_contact(runtime, shop, i) for i in (1, 2)}
    assert {m.contact_id for m in sent} == {c.contact_id for c in given} == first_two
    assert {link.contact_id for link in issued} == first_two and len(issued) == 2
    with runtime.engine.connect() as conn:
        counts = journeys.get(conn, shop.tenant_id, j["id"])["counts"]
    assert counts["completed"] == 2 and counts["outcome.coupon_pool_exhausted"] == 2
    # Empty now: a new enrolment leaves at once, and nothing of it is written.
    _carts(runtime, shop, [5], tag="again")
    assert len(_rows(runtime, shop, messages)) == 2 and len(_rows(runtime, shop, links)) == 2
    with runtime.engine.connect() as conn:
        counts = journeys.get(conn, shop.tenant_id, j["id"])["counts"]
    assert counts["outcome.coupon_pool_exhausted"] == 3
    # Codes imported: those who enrol later get them.
    with runtime.engine.begin() as conn:
        coupon_service.import_codes(conn, shop.tenant_id, pool, ["MORE0001"])
    _carts(runtime, shop, [6], tag="later")
    assert len(_rows(runtime, shop, messages)) == 3
    assert {c.code for c in _rows(runtime, shop, coupons) if c.state == "issued"} == {
        "LAST0001", "LAST0002", "MORE0001",
    }  # fmt: skip
    # The scheduler's pass finds nothing left to do (none is stuck on the step).
    assert journeys.tick(runtime.engine, runtime.clock, runtime.keyring) == {}


def test_bad_link_and_coupon_steps_are_refused_before_anything_is_stored(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
    theirs = _pool(runtime, other, "generate")
    mine = _pool(runtime, shop, "generate")
    both = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, LINK_AND_COUPON))
    link = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, LINK_ONLY))
    plain = _template_id(runtime, shop, shop.versions[2])
    bad: list[tuple[dict[str, Any], str]] = [
        ({"template_id": link}, "link_url"),  # {link} without a URL
        ({"template_id": link, "link_url": "  "}, "link_url"),
        ({"template_id": link, "link_url": "ftp://shop.example/x"}, "http"),
        ({"template_id": link, "link_url": "javascript:alert(1)"}, "http"),
        ({"template_id": link, "link_url": "https://"}, "http"),
        ({"template_id": link, "link_url": "https://shop.example/a b"}, "http"),
        ({"template_id": link, "link_url": "https://s.example/" + "x" * 500}, "http"),
        ({"template_id": both, "link_url": TARGET}, "coupon_pool_id"),  # {coupon} without a pool
        ({"template_id": both, "link_url": TARGET, "coupon_pool_id": 99999}, "no coupon pool"),
        ({"template_id": both, "link_url": TARGET, "coupon_pool_id": theirs}, "no coupon pool"),
        ({"template_id": both, "link_url": TARGET, "coupon_pool_id": "1"}, "pool's id"),
        # past an INTEGER id: "integer out of range" on PostgreSQL (past 2**63 an OverflowError
        # on SQLite), a 500 before (found by the fuzz)
        ({"template_id": both, "link_url": TARGET, "coupon_pool_id": 2**31}, "no coupon pool"),
        ({"template_id": 2**31}, "name a template"),
        ({"template_id": 2**63}, "name a template"),
        ({"template_id": plain, "link_url": TARGET}, "does not place"),
        ({"template_id": plain, "coupon_pool_id": mine}, "does not place"),
    ]
    for step, why in bad:
        with pytest.raises(ValidationFailed, match=why) as refused, runtime.engine.begin() as conn:
            journeys.create(
                conn, runtime.clock, shop.tenant_id, actor="t", name="坏", trigger="add_to_cart",
                steps=[{"kind": "send", **step}],
            )  # fmt: skip
        assert refused.value.status == 422 and refused.value.code == "journey_invalid"
    with pytest.raises(ValidationFailed, match="only a send step"), runtime.engine.begin() as conn:
        journeys.create(
            conn, runtime.clock, shop.tenant_id, actor="t", name="坏", trigger="add_to_cart",
            steps=[{"kind": "wait", "minutes": 5, "link_url": TARGET},
                   {"kind": "send", "template_id": plain}],
        )  # fmt: skip
    # the API answers 422 with both languages, and stores nothing
    key = make_key(runtime, shop.tenant_id, Role.OPERATOR)
    body = {
        "name": "坏",
        "trigger": "add_to_cart",
        "steps": [{"kind": "send", "template_id": link}],
    }
    r = client.post("/api/v1/journeys", headers=auth(key), json=body)
    assert r.status_code == 422 and r.json()["code"] == "journey_invalid"
    assert "link_url" in r.json()["message"]["en"] and "{link}" in r.json()["message"]["zh"]
    foreign = {**body, "steps": [{"kind": "send", "template_id": both, "link_url": TARGET,
                                  "coupon_pool_id": theirs}]}  # fmt: skip
    assert client.post("/api/v1/journeys", headers=auth(key), json=foreign).status_code == 422
    huge = {**body, "steps": [{"kind": "send", "template_id": 2**70}]}
    r = client.post("/api/v1/journeys", headers=auth(key), json=huge)
    assert r.status_code == 422 and r.json()["code"] == "journey_invalid"
    with runtime.engine.connect() as conn:
        assert journeys.list_journeys(conn, shop.tenant_id) == []
    # and a good one is made, its step's link and pool shown back
    good = {**body, "steps": [{"kind": "send", "template_id": both, "link_url": TARGET,
                               "coupon_pool_id": mine}]}  # fmt: skip
    made = client.post("/api/v1/journeys", headers=auth(key), json=good)
    assert made.status_code == 201, made.text
    assert made.json()["steps"][0]["link_url"] == TARGET
    assert made.json()["steps"][0]["coupon_pool_id"] == mine


def test_journey_links_from_the_cli(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from hongyan.cli.main import open_runtime

    cli("db", "upgrade")
    runtime = open_runtime()
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    both = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, LINK_AND_COUPON))
    runtime.close()
    pool = cli("coupons", "create", "购物车券", "--tenant", "tea")["id"]
    step = {"kind": "send", "template_id": both, "link_url": TARGET, "coupon_pool_id": pool}
    made = cli(
        "journeys", "create", "--tenant", "tea", "--name", "挽回", "--trigger", "add_to_cart",
        "--steps", json.dumps([step]),
    )  # fmt: skip
    assert made["steps"][0]["link_url"] == TARGET and made["steps"][0]["coupon_pool_id"] == pool
    refused = cli(
        "journeys", "create", "--tenant", "tea", "--name", "坏", "--trigger", "add_to_cart",
        "--steps", json.dumps([{**step, "link_url": "mailto:a@b.example"}]), ok=False,
    )  # fmt: skip
    assert refused["error"]["code"] == "journey_invalid"
    rep = cli("report", "journey", str(made["id"]), "--tenant", "tea")
    assert rep["steps"][0]["link_url"] == TARGET and rep["totals"]["clicks_total"] == 0


def test_a_campaign_and_a_journey_issuing_from_one_pool_at_once(
    runtime: Runtime, shop: Shop
) -> None:
    """A campaign launch and a journey's pass take codes from one imported pool at the same
    instant (two threads; on PostgreSQL they meet at the tenant's cap lock, on SQLite at the
    write lock). Seven codes are wanted, six exist: whichever comes second is short. Whatever
    the order, no code is given twice and every code given is in its recipient's message."""
    import threading

    from hongyan.campaigns import service as campaigns
    from hongyan.tracking.errors import CouponPoolExhausted

    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    pool = _pool(runtime, shop, "import", [f"BOTH000{i}" for i in range(6)])
    version = approved_version(runtime, shop.tenant_id, COUPON_ONLY)
    tid = _template_id(runtime, shop, version)
    with runtime.engine.begin() as conn:
        j = journeys.create(
            conn, clock, shop.tenant_id, actor="t", name="两步", trigger="add_to_cart",
            steps=[{"kind": "wait", "minutes": 60},
                   {"kind": "send", "template_id": tid, "coupon_pool_id": pool}],
        )  # fmt: skip
        camp = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="同池",
            phones=[shop.phones[i] for i in (5, 6, 7)],
            variants=[{"template_version_id": version, "coupon_pool_id": pool}], actor="t",
        )  # fmt: skip
    clock.advance(timedelta(minutes=1))
    _carts(runtime, shop, [1, 2, 3, 4])
    clock.advance(timedelta(minutes=61))
    barrier = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def launch() -> None:
        barrier.wait(timeout=10)
        try:
            with runtime.engine.begin() as conn:
                outcome["campaign"] = campaigns.launch(
                    conn, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
                )["counts"]
        except CouponPoolExhausted as exc:
            outcome["campaign"] = exc

    def journey() -> None:
        barrier.wait(timeout=10)
        outcome["journey"] = journeys.tick(runtime.engine, clock, runtime.keyring)

    threads = [threading.Thread(target=launch), threading.Thread(target=journey)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    given = [c for c in _rows(runtime, shop, coupons) if c.state == "issued"]
    sent = _rows(runtime, shop, messages)
    body = {m.contact_id: m.body for m in sent}
    assert len(body) == len(sent)  # one message each
    assert len({c.code for c in given}) == len(given) <= 6
    # every code given is in its recipient's one message, and every message has its code
    assert {c.contact_id for c in given} == set(body)
    assert all(c.code in body[c.contact_id] for c in given)
    with runtime.engine.connect() as conn:
        counts = journeys.get(conn, shop.tenant_id, j["id"])["counts"]
    if isinstance(outcome["campaign"], CouponPoolExhausted):  # the journey came first
        assert outcome["journey"]["sent"] == 4 and len(given) == 4
        assert {c.journey_id for c in given} == {j["id"]}
    else:  # the campaign came first: three for it, three for the journey, one left out
        assert outcome["campaign"]["planned"] == 3 and len(given) == 6
        assert counts["outcome.coupon_pool_exhausted"] == 1 and counts["completed"] == 3

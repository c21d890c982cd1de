"""Links, coupons, the issuing hook, the redirector and attribution, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.content.fields import COUPON_LENGTH, SHORT_LINK_LENGTH
from hongyan.db.scope import TenantScope
from hongyan.db.tables import clicks, conversions, coupon_rejections, coupons, links
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from hongyan.tracking import codes
from hongyan.tracking import coupons as coupon_service
from hongyan.tracking import links as link_service
from hongyan.tracking.errors import CouponPoolExhausted, CouponPoolNotFound, TrackingInvalid
from tests.tracking.support import contacts_for, issue_for, order

PHONES = ["+8613800000001", "+8613800000002", "+8613800000003"]
PERSON = "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 Mobile MicroMessenger/8.0"


@pytest.fixture
def tenant_id(runtime: Runtime) -> int:
    with runtime.engine.begin() as conn:
        return tenants.create_tenant(conn, runtime.clock, slug="tea", name="鸿雁茶饮").id


def _pool(runtime: Runtime, tenant_id: int, kind: str, codes_: list[str] | None = None) -> int:
    with runtime.engine.begin() as conn:
        pool = coupon_service.create_pool(
            conn, tenant_id, runtime.clock.now(), name=f"pool-{kind}", kind=kind
        )
        if codes_:
            coupon_service.import_codes(conn, tenant_id, pool, codes_)
    return pool


def _count(
    runtime: Runtime, tenant_id: int, table: sa.Table, *where: sa.ColumnElement[bool]
) -> int:
    scope = TenantScope(tenant_id)
    with runtime.engine.connect() as conn:
        return int(conn.execute(scope.select(table, sa.func.count()).where(*where)).scalar_one())


def test_links_and_generated_coupons_per_recipient(runtime: Runtime, tenant_id: int) -> None:
    ids = contacts_for(runtime, tenant_id, PHONES)
    pool = _pool(runtime, tenant_id, "generate")
    out = issue_for(
        runtime,
        tenant_id=tenant_id,
        contact_ids=ids,
        link_url="https://shop.example/p/1?utm=sms",
        coupon_pool_id=pool,
    )
    assert set(out) == {"link", "coupon"}
    assert len(out["link"]) == len(out["coupon"]) == 3
    assert all(len(u) == SHORT_LINK_LENGTH and u.startswith("https://hy.cx/") for u in out["link"])
    assert all(len(c) == COUPON_LENGTH for c in out["coupon"])
    scope = TenantScope(tenant_id)
    with runtime.engine.connect() as conn:
        by_code = {
            r.code: r.contact_id
            for r in conn.execute(scope.select(links, links.c.code, links.c.contact_id))
        }
        coupon_owner = {
            r.code: r.contact_id
            for r in conn.execute(scope.select(coupons, coupons.c.code, coupons.c.contact_id))
        }
    assert [by_code[u.rsplit("/", 1)[1]] for u in out["link"]] == ids  # in the contacts' order
    assert [coupon_owner[c] for c in out["coupon"]] == ids
    only_links = issue_for(
        runtime, tenant_id=tenant_id, contact_ids=ids, link_url="https://x.example/"
    )
    assert set(only_links) == {"link"}


def test_tenant_link_base(runtime: Runtime, tenant_id: int) -> None:
    with runtime.engine.begin() as conn:
        link_service.configure(conn, tenant_id, runtime.clock.now(), link_base="https://t.example/")
        with pytest.raises(TrackingInvalid):
            link_service.configure(conn, tenant_id, runtime.clock.now(), link_base="t.example")
        with pytest.raises(TrackingInvalid):
            link_service.configure(conn, tenant_id, runtime.clock.now(), attribution_days=0)
    out = issue_for(runtime, tenant_id=tenant_id, contact_ids=[1], link_url="https://a.example/")
    assert out["link"][0].startswith("https://t.example/") and len(out["link"][0]) == 25
    with pytest.raises(TrackingInvalid):
        issue_for(runtime, tenant_id=tenant_id, contact_ids=[1], link_url="javascript:alert(1)")


def test_imported_pool_runs_out_all_or_nothing(runtime: Runtime, tenant_id: int) -> None:
    pool = _pool(runtime, tenant_id, "import", ["SHOP-0001", "shop0002", "SHOP0003", "SHOP0001"])
    with runtime.engine.begin() as conn:
        [p] = coupon_service.list_pools(conn, tenant_id)
        assert (p.available, p.issued) == (3, 0)
        with pytest.raises(TrackingInvalid):
            coupon_service.import_codes(conn, tenant_id, pool, ["ok12", "no!"])
    with pytest.raises(CouponPoolExhausted):
        issue_for(
            runtime,
            tenant_id=tenant_id,
            contact_ids=[1, 2, 3, 4],
            link_url="https://a.example/",
            coupon_pool_id=pool,
        )
    assert _count(runtime, tenant_id, links) == 0  # the links went with the coupons
    assert _count(runtime, tenant_id, coupons, coupons.c.state == "available") == 3
    out = issue_for(runtime, tenant_id=tenant_id, contact_ids=[7, 8], coupon_pool_id=pool)
    assert out == {"coupon": ["SHOP0001", "SHOP0002"]}
    out = issue_for(runtime, tenant_id=tenant_id, contact_ids=[9], coupon_pool_id=pool)
    assert out == {"coupon": ["SHOP0003"]}
    with pytest.raises(CouponPoolExhausted):
        issue_for(runtime, tenant_id=tenant_id, contact_ids=[10], coupon_pool_id=pool)
    with runtime.engine.begin() as conn:
        other = tenants.create_tenant(conn, runtime.clock, slug="other", name="O").id
    with pytest.raises(CouponPoolNotFound):  # another tenant's pool is not found
        issue_for(runtime, tenant_id=other, contact_ids=[1], coupon_pool_id=pool)


def test_redirect_records_clicks_bots_apart(
    client: TestClient, runtime: Runtime, tenant_id: int
) -> None:
    ids = contacts_for(runtime, tenant_id, PHONES[:2])
    out = issue_for(
        runtime, tenant_id=tenant_id, contact_ids=ids, link_url="https://shop.example/p/1"
    )
    code = out["link"][0].rsplit("/", 1)[1]
    r = client.get(f"/{code}", headers={"user-agent": PERSON}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/p/1"
    r = client.get(f"/{code}", headers={"user-agent": "Slackbot 1.0"}, follow_redirects=False)
    assert r.status_code == 302
    r = client.head(f"/{code}", headers={"user-agent": PERSON}, follow_redirects=False)
    assert r.status_code == 302
    scope = TenantScope(tenant_id)
    with runtime.engine.connect() as conn:
        rows = conn.execute(scope.select(clicks).order_by(clicks.c.id)).all()
    assert [r.bot for r in rows] == [None, "preview", "head"]
    assert {(r.campaign_id, r.variant, r.contact_id) for r in rows} == {(1, "A", ids[0])}
    assert rows[0].ip_hash is not None and len(rows[0].ip_hash) == 16
    assert rows[0].at == runtime.clock.now()


def test_expired_unknown_and_flood(client: TestClient, runtime: Runtime, tenant_id: int) -> None:
    now = runtime.clock.now()
    out = issue_for(
        runtime,
        tenant_id=tenant_id,
        contact_ids=[1],
        link_url="https://shop.example/",
        expires_at=now - timedelta(seconds=1),
    )
    code = out["link"][0].rsplit("/", 1)[1]
    r = client.get(f"/{code}", follow_redirects=False)
    assert r.status_code == 410 and "已过期" in r.text
    r = client.get("/zzzzzzz", follow_redirects=False)
    assert r.status_code == 404 and "链接不存在" in r.text
    for _ in range(30):  # not code-shaped: no guess, never limited
        assert client.get("/favicon.ico").status_code == 404
    statuses = [client.get(f"/{codes.new_link_code()}").status_code for _ in range(25)]
    assert 429 in statuses and statuses[:18] == [404] * 18
    assert client.get("/api/v1/health").status_code == 200  # the API is not limited
    assert _count(runtime, tenant_id, clicks) == 0


def test_conversions_by_coupon_and_last_click(
    client: TestClient, runtime: Runtime, tenant_id: int
) -> None:
    ids = contacts_for(runtime, tenant_id, PHONES)
    pool = _pool(runtime, tenant_id, "generate")
    a = issue_for(
        runtime,
        tenant_id=tenant_id,
        contact_ids=ids[:2],
        campaign_id=5,
        variant="A",
        link_url="https://shop.example/a",
        coupon_pool_id=pool,
    )
    b = issue_for(
        runtime,
        tenant_id=tenant_id,
        contact_ids=ids[2:],
        campaign_id=5,
        variant="B",
        link_url="https://shop.example/b",
    )
    # contact 3 clicks B (a person), contact 2 is only seen by a preview bot
    client.get("/" + b["link"][0].rsplit("/", 1)[1], headers={"user-agent": PERSON})
    client.get("/" + a["link"][1].rsplit("/", 1)[1], headers={"user-agent": "Twitterbot/1.0"})
    t = runtime.clock.now()
    order(
        runtime, tenant_id, "o1", PHONES[0], t + timedelta(hours=1), 19900, a["coupon"][0].lower()
    )
    order(
        runtime, tenant_id, "o2", PHONES[1], t + timedelta(hours=1), 5000, a["coupon"][0]
    )  # reused
    order(runtime, tenant_id, "o3", PHONES[2], t + timedelta(days=2), 8800)  # last click: B
    order(runtime, tenant_id, "o4", PHONES[2], t + timedelta(days=9), 100)  # outside the window
    order(runtime, tenant_id, "o5", PHONES[1], t + timedelta(hours=2), 100, "NOPE2345")
    order(runtime, tenant_id, "o1", PHONES[0], t + timedelta(hours=1), 19900, a["coupon"][0])
    scope = TenantScope(tenant_id)
    with runtime.engine.connect() as conn:
        conv = {
            r.order_key: (r.method, r.campaign_id, r.variant, r.amount_fen)
            for r in conn.execute(scope.select(conversions))
        }
        rej = {
            (r.order_key, r.code, r.reason) for r in conn.execute(scope.select(coupon_rejections))
        }
        state = conn.execute(
            scope.select(coupons, coupons.c.state).where(coupons.c.code == a["coupon"][0])
        ).scalar_one()
    assert conv == {"o1": ("coupon", 5, "A", 19900), "o3": ("click", 5, "B", 8800)}
    assert rej == {("o2", a["coupon"][0], "used"), ("o5", "NOPE2345", "unknown")}
    assert state == "redeemed"


def test_events_api_never_500_on_bad_coupons(client: TestClient, runtime: Runtime) -> None:
    from tests.api.test_api import _tenant_with_key, auth

    tid, key = _tenant_with_key(runtime, "shop")
    body = {
        "events": [
            {
                "event_id": f"e{i}",
                "kind": "order",
                "phone": "13800000009",
                "occurred_at": "2026-11-11T12:00:00+08:00",
                "order_id": "same-order",
                "amount_fen": 100,
                "coupon_code": code,
            }
            for i, code in enumerate(["ZZZZ2345", "ZZZZ2345", "x" * 64])
        ]
    }
    r = client.post("/api/v1/events", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    assert _count(runtime, tid, coupon_rejections) == 1  # one order, attributed or refused once

"""The console's form that makes a journey: a send step with its link target and coupon pool,
and the refusals shown on the form (422, nothing stored)."""

from __future__ import annotations

import html as html_lib
from typing import Any

from fastapi.testclient import TestClient

from hongyan.campaigns import journeys
from hongyan.runtime import Runtime
from hongyan.tracking import coupons
from tests.campaigns.support import make_shop
from tests.campaigns.test_console import _user
from tests.campaigns.test_journeys import _template_id
from tests.content.support import approved_version
from tests.web.test_console import csrf_field, login

BODY = "【鸿雁茶饮】{name|您好}，购物车的宝贝还在，专属券{coupon}已到账，点击{link} 领取，回T退订"
TARGET = "https://shop.example/cart"


def test_a_journey_with_a_link_and_coupon_step_from_the_console(
    client: TestClient, runtime: Runtime
) -> None:
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
    template = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, BODY))
    with runtime.engine.begin() as conn:
        now = runtime.clock.now()
        pool = coupons.create_pool(conn, shop.tenant_id, now, name="购物车券")
        theirs = coupons.create_pool(conn, other.tenant_id, now, name="别家的券")
    _user(runtime, shop)
    login(client)
    listing = client.get("/console/campaigns")
    assert 'href="/console/journeys/new"' in listing.text
    page = client.get("/console/journeys/new")
    assert page.status_code == 200
    assert "新建旅程" in page.text and "购物车券" in page.text and "别家的券" not in page.text
    assert "{link}" in html_lib.unescape(page.text)  # the template says what it places
    token = csrf_field(page.text)
    form: dict[str, Any] = {
        "csrf_token": token, "name": "购物车挽回", "trigger": "add_to_cart", "exit_on": "order",
        "kind_0": "wait", "minutes_0": "60",
        "kind_1": "send", "template_1": str(template), "link_url_1": TARGET,
        "coupon_pool_1": str(pool),
    }  # fmt: skip
    # refused, shown on the form with the reason, nothing stored
    for bad, why in (
        ({"link_url_1": ""}, "第 2 步：模板含 {link}，请填写链接目标地址"),
        ({"link_url_1": "ftp://shop.example/x"}, "第 2 步：链接目标须为 http(s) 网址"),
        ({"coupon_pool_1": str(theirs)}, f"第 2 步：找不到优惠券池 {theirs}"),
        ({"kind_2": "condition", "rule_2": "{not json"}, "第 3 步：条件不是有效的 JSON"),
    ):
        r = client.post("/console/journeys/new", data={**form, **bad}, follow_redirects=False)
        assert r.status_code == 422, r.text
        problem = html_lib.unescape(r.text.split('id="journey-problem">', 1)[1].split("<", 1)[0])
        assert why in problem, problem
        assert 'value="购物车挽回"' in r.text  # the form keeps what was typed
    with runtime.engine.connect() as conn:
        assert journeys.list_journeys(conn, shop.tenant_id) == []
    made = client.post("/console/journeys/new", data=form, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/console/campaigns"
    with runtime.engine.connect() as conn:
        (j,) = journeys.list_journeys(conn, shop.tenant_id)
        steps = journeys.get(conn, shop.tenant_id, j["id"])["steps"]
    assert [s["kind"] for s in steps] == ["wait", "send"] and steps[0]["minutes"] == 60
    assert steps[1]["link_url"] == TARGET and steps[1]["coupon_pool_id"] == pool
    assert "已创建旅程" in client.get("/console/campaigns").text

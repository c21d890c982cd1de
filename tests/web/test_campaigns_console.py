"""The campaign wizard's link target and coupon pool: the fields on the copy step (the tenant's
own pools only), the refusals shown on the form beside the field (422, Chinese by default,
English on request, what was typed kept, nothing stored), and a good campaign's review showing
where each variant's link leads and its pool."""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

from fastapi.testclient import TestClient

from hongyan.campaigns import service as campaigns
from hongyan.runtime import Runtime
from hongyan.tracking import coupons
from tests.campaigns.support import make_shop
from tests.campaigns.test_console import _user
from tests.campaigns.test_journey_links import COUPON_ONLY, LINK_AND_COUPON, TARGET
from tests.campaigns.test_journeys import _template_id
from tests.content.support import approved_version
from tests.web.test_console import csrf_field, login


def _text(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found is not None, f"no #{element_id}"
    return html_lib.unescape(found.group(1))


def test_the_wizard_takes_a_link_target_and_a_coupon_pool(
    client: TestClient, runtime: Runtime
) -> None:
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
    both = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, LINK_AND_COUPON))
    coupon = _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, COUPON_ONLY))
    plain = _template_id(runtime, shop, shop.versions[2])
    with runtime.engine.begin() as conn:
        now = runtime.clock.now()
        pool = coupons.create_pool(conn, shop.tenant_id, now, name="会员券")
        stock = coupons.create_pool(conn, shop.tenant_id, now, name="导入券", kind="import")
        coupons.import_codes(conn, shop.tenant_id, stock, ["CODE0001", "CODE0002"])
        theirs = coupons.create_pool(conn, other.tenant_id, now, name="别家的券")
    _user(runtime, shop)
    login(client)
    wizard = client.get("/console/campaigns/new")
    assert wizard.status_code == 200
    page = wizard.text
    # the fields, and each template saying what it places (the page shows the fields by it)
    assert 'name="link_url"' in page and 'name="coupon_pool"' in page
    assert "链接目标地址" in page and "优惠券池" in page
    assert f'value="{both}" data-needs="link coupon"' in page
    assert f'value="{coupon}" data-needs="coupon"' in page
    assert f'value="{plain}" data-needs=""' in page
    # the tenant's own pools, with their kind and an imported pool's stock
    assert f'<option value="{pool}">会员券 (自动生成)</option>' in page
    assert f'<option value="{stock}">导入券 (导入券码，剩余 2 个)</option>' in page
    assert "别家的券" not in page and f'<option value="{theirs}"' not in page
    token = csrf_field(page)
    form: dict[str, Any] = {
        "csrf_token": token, "name": "会员日", "segment": str(shop.segment_id),
        "template": [str(both), str(plain)], "when": "now", "on_window_end": "carry",
        "link_url": TARGET, "coupon_pool": str(pool),
    }  # fmt: skip
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"link_url": ""}, "版本 A：模板含 {link}，请填写链接目标地址", "link-url"),
        ({"link_url": "ftp://shop.example/x"}, "链接目标须为 http(s) 网址", "link-url"),
        ({"link_url": "https://shop.example/a b"}, "链接目标须为 http(s) 网址", "link-url"),
        ({"link_url": "https://"}, "链接目标须为 http(s) 网址", "link-url"),
        ({"link_url": "https://s.example/" + "x" * 500}, "最长 500 个字符", "link-url"),
        ({"coupon_pool": ""}, "版本 A：模板含 {coupon}，请选择优惠券池", "coupon-pool"),
        ({"coupon_pool": str(theirs)}, f"找不到优惠券池 {theirs}", "coupon-pool"),
        ({"coupon_pool": "x1"}, "优惠券池须为其编号", "coupon-pool"),
        ({"template": str(plain)}, "所选模板都不含 {link}，无需填写链接目标地址", "link-url"),
        ({"template": str(plain), "link_url": ""}, "所选模板都不含 {coupon}", "coupon-pool"),
    ]
    for change, why, where in bad:
        r = client.post("/console/campaigns/new", data={**form, **change}, follow_redirects=False)
        assert r.status_code == 422, (change, r.text[:300])
        assert why in _text(r.text, "wizard-problem"), change
        assert why in _text(r.text, f"{where}-error"), change  # beside the field it concerns
        assert f'aria-invalid="true" aria-describedby="{where}-error"' in r.text
        assert 'value="会员日"' in r.text  # what was typed is kept
        link = change.get("link_url", TARGET)
        assert f'value="{html_lib.escape(link)}"' in r.text
    with runtime.engine.connect() as conn:
        assert campaigns.list_campaigns(conn, shop.tenant_id) == []
    # in English, in English
    client.get("/lang/en", headers={"referer": "http://testserver/console"})
    r = client.post("/console/campaigns/new", data={**form, "link_url": "mailto:a@b.example"})
    assert r.status_code == 422
    assert "link_url is an http(s) address" in _text(r.text, "link-url-error")
    assert "Where {link} leads" in html_lib.unescape(r.text)
    client.get("/lang/zh-CN", headers={"referer": "http://testserver/console"})
    # made: the review says where each variant's link leads and its pool
    made = client.post("/console/campaigns/new", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text[:500]
    with runtime.engine.connect() as conn:
        camp = campaigns.get(conn, shop.tenant_id, "会员日")
    assert [(v["link_url"], v["coupon_pool_id"]) for v in camp["variants"]] == [
        (TARGET, pool), (None, None),
    ]  # fmt: skip
    review = client.get(made.headers["location"]).text
    assert f'data-variant-link="A">链接目标地址：<code>{html_lib.escape(TARGET)}</code>' in review
    assert f'data-variant-pool="A">优惠券池：会员券 #{pool}<' in review
    assert 'data-variant-link="B"' not in review and 'data-variant-pool="B"' not in review

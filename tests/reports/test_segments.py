"""A segment's report on both databases: the funnel across the campaigns sent to the segment,
per campaign, from real launches, clicks through the redirector and an order; a campaign sent
to an uploaded list stays out. Every figure checked by hand."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hongyan.campaigns import caps
from hongyan.campaigns import service as campaigns
from hongyan.contacts import service as contacts
from hongyan.db.scope import TenantScope
from hongyan.db.tables import messages
from hongyan.errors import NotFound
from hongyan.reports.segments import segment_report
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import auth
from tests.campaigns.support import Shop, make_shop
from tests.content.support import approved_version
from tests.reports.support import claim_all, console_user, deliver, make_key, submit, undeliver
from tests.tracking.support import order
from tests.web.test_console import login

LINKED = "【鸿雁茶饮】新品上市{link} 回T退订"
PERSON = "Mozilla/5.0 (iPhone) Mobile MicroMessenger/8.0"


def _launch(runtime: Runtime, shop: Shop, name: str, **kw: Any) -> int:
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, name=name, actor="t", **kw
        )
        if name != "草稿":
            campaigns.launch(
                conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
            )
    return int(camp["id"])


def _campaigns(client: TestClient, runtime: Runtime, shop: Shop) -> dict[str, int]:
    """新品 (the segment, a link): 8 sent, 6 delivered, 2 invalid numbers; contact 1 clicks twice
    and orders ¥99. 清单 (an uploaded list of 2): pending. 周末 (the segment): 8 pending.
    草稿 (the segment): never launched."""
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, runtime.clock, shop.tenant_id, {"default": [10, 30], "new": [10, 30]})
    linked = approved_version(runtime, shop.tenant_id, LINKED)
    ids = {
        "新品": _launch(
            runtime, shop, "新品", segment=shop.segment_id,
            variants=[{"template_version_id": linked, "link_url": "https://shop.example/new"}],
        ),
    }  # fmt: skip
    sent = sorted(claim_all(runtime))
    assert len(sent) == 8  # 10 contacts, one opted out, one without consent
    for mid in sent:
        submit(runtime, mid)
    for mid in sent[:6]:
        deliver(runtime, mid)
    for mid in sent[6:]:
        undeliver(runtime, mid)
    plain = {"template_version_id": shop.versions[0]}
    ids["清单"] = _launch(runtime, shop, "清单", phones=shop.phones[1:3], variants=[plain])
    ids["周末"] = _launch(runtime, shop, "周末", segment=shop.segment_id, variants=[plain])
    ids["草稿"] = _launch(runtime, shop, "草稿", segment=shop.segment_id, variants=[plain])
    with runtime.engine.connect() as conn:
        contact = contacts.find_id(conn, runtime.keyring, shop.tenant_id, shop.phones[1])
        body = conn.execute(
            TenantScope(shop.tenant_id)
            .select(messages, messages.c.body)
            .where(messages.c.campaign_id == ids["新品"], messages.c.contact_id == contact)
        ).scalar_one()
    code = re.search(r"/([0-9A-Za-z]{7}) ", body)
    assert code is not None, body
    for _ in range(2):
        r = client.get("/" + code.group(1), headers={"user-agent": PERSON}, follow_redirects=False)
        assert r.status_code == 302
    at = runtime.clock.now() + timedelta(hours=1)
    order(runtime, shop.tenant_id, "o1", shop.phones[1], at, 9900)
    return ids


def test_segment_report_per_campaign(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    ids = _campaigns(client, runtime, shop)
    with runtime.engine.connect() as conn:
        rep = segment_report(conn, shop.tenant_id, shop.segment_id)
        assert segment_report(conn, shop.tenant_id, "全部")["totals"] == rep["totals"]
        with pytest.raises(NotFound):
            segment_report(conn, shop.tenant_id, shop.segment_id + 1)
    assert rep["segment_id"] == shop.segment_id and rep["name"] == "全部"
    rows = {c["name"]: c for c in rep["campaigns"]}
    assert [c["campaign_id"] for c in rep["campaigns"]] == [ids["新品"], ids["周末"], ids["草稿"]]
    new, weekend, draft = rows["新品"], rows["周末"], rows["草稿"]
    assert (new["planned"], new["sent"], new["delivered"], new["failed"], new["pending"]) == (
        8, 8, 6, 2, 0,
    )  # fmt: skip
    assert (new["clicks_total"], new["clicks_unique"], new["conversions"]) == (2, 1, 1)
    assert (new["revenue_fen"], new["parts"], new["cost_fen"]) == (9900, 8, 40)
    assert (new["delivery_rate"], new["click_rate"], new["roi"]) == (0.75, round(1 / 6, 4), 246.5)
    assert (weekend["planned"], weekend["sent"], weekend["pending"], weekend["cost_fen"]) == (
        8, 0, 8, 0,
    )  # fmt: skip
    assert (draft["state"], draft["planned"], draft["delivery_rate"]) == ("draft", 0, None)
    t = rep["totals"]
    assert (t["planned"], t["sent"], t["delivered"], t["failed"], t["pending"]) == (
        16, 8, 6, 2, 8,
    )  # fmt: skip
    assert (t["clicks_total"], t["conversions"], t["revenue_fen"], t["cost_fen"]) == (
        2, 1, 9900, 40,
    )  # fmt: skip
    assert rep["failures"] == [{"reason": "invalid_number", "count": 2}]
    assert rep["failures_by_campaign"] == [
        {"campaign_id": ids["新品"], "reason": "invalid_number", "count": 2}
    ]
    assert [
        (p["province"], p["planned"], p["delivered"], p["clicks_unique"], p["revenue_fen"])
        for p in rep["provinces"]
    ] == [("新疆", 16, 6, 1, 9900)]
    assert sum(h["clicks"] for h in rep["clicks_by_hour_of_day"]) == 2
    assert rep["clicks_by_hour_after_send"] == [] and "variants" not in rep


def test_segment_report_api_and_console(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    ids = _campaigns(client, runtime, shop)
    key = make_key(runtime, shop.tenant_id, Role.ANALYST)
    r = client.get(f"/api/v1/reports/segments/{shop.segment_id}", headers=auth(key))
    assert r.status_code == 200 and r.json()["totals"]["planned"] == 16
    assert [c["campaign_id"] for c in r.json()["campaigns"]] == [
        ids["新品"], ids["周末"], ids["草稿"],
    ]  # fmt: skip
    assert client.get("/api/v1/reports/segments/999", headers=auth(key)).status_code == 404
    csv = client.get(f"/api/v1/reports/segments/{shop.segment_id}/export.csv", headers=auth(key))
    assert csv.status_code == 200
    assert f"{ids['新品']},新品,8,8,6,2" in csv.text and "campaign_id,reason,count" in csv.text
    xlsx = client.get(f"/api/v1/reports/segments/{shop.segment_id}/export.xlsx", headers=auth(key))
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    login(client, console_user(runtime, shop.tenant_id))
    assert f"/console/reports/segments/{shop.segment_id}" in client.get("/console/reports").text
    page = client.get(f"/console/reports/segments/{shop.segment_id}")
    assert page.status_code == 200
    assert f'<tr data-variant="#{ids["新品"]} 新品">' in page.text
    assert 'data-step="planned"><td>计划</td><td class="num">16</td>' in page.text

"""The campaign console: the wizard, the review with counts and cost, launch, the live status
panel, pause; Chinese by default, English on request; tenants kept apart."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.campaigns.support import Shop, make_shop
from tests.web.test_console import PASSWORD, csrf_field, login


def _user(runtime: Runtime, shop: Shop, email: str = "owner@tea.example") -> None:
    with runtime.engine.begin() as conn:
        tenants.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=shop.tenant_id, email=email,
            name="王小明", role="owner", password=PASSWORD,
        )  # fmt: skip


def test_wizard_review_launch_and_status(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime)
    _user(runtime, shop)
    login(client)
    page = client.get("/console/campaigns")
    assert page.status_code == 200 and "还没有营销活动" in page.text
    wizard = client.get("/console/campaigns/new")
    assert "选择人群" in wizard.text and "全部" in wizard.text
    assert "会员日第二杯半价" in wizard.text  # the copy's preview, with its count
    token = csrf_field(wizard.text)
    with runtime.engine.connect() as conn:
        from hongyan.campaigns.service import copy_choices

        choices = copy_choices(conn, shop.tenant_id)
    first = next(c for c in choices if c["version_id"] == shop.versions[0])
    bad = client.post(
        "/console/campaigns/new",
        data={"csrf_token": token, "name": "会员日", "segment": str(shop.segment_id),
              "template": str(first["template_id"]), "when": "at", "at": "2020-01-01T10:00"},
    )  # fmt: skip
    assert bad.status_code == 422 and "已经过去" in bad.text
    assert 'value="会员日"' in bad.text  # the form comes back as it was
    made = client.post(
        "/console/campaigns/new",
        data={"csrf_token": token, "name": "会员日", "segment": str(shop.segment_id),
              "template": str(first["template_id"]), "when": "now", "window": "",
              "on_window_end": "carry"},
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303, made.text
    url = made.headers["location"]
    review = client.get(url)
    assert 'id="est-recipients">38<' in review.text
    assert 'data-reason="suppressed">1<' in review.text
    assert "¥1.90" in review.text and "启动" in review.text
    launched = client.post(f"{url}/launch", data={"csrf_token": token}, follow_redirects=False)
    assert launched.status_code == 303
    status = client.get(url)
    assert 'id="count-planned">38<' in status.text
    assert 'hx-trigger="every 2s"' in status.text  # live while messages wait
    panel = client.get(url, headers={"hx-request": "true", "hx-target": "records"})
    assert panel.text.lstrip().startswith('<div id="records"')
    client.post(f"{url}/pause", data={"csrf_token": token})
    assert "已暂停" in client.get(url).text
    client.get("/lang/en", headers={"referer": "http://testserver/console"})
    assert "Paused" in client.get(url).text
    # another tenant's user sees nothing of it
    other = make_shop(runtime, 3, slug="other", opted_out=0, without_consent=0)
    _user(runtime, other, "boss@other.example")
    client.post("/logout", data={"csrf_token": token})
    login(client, "boss@other.example")
    assert client.get(url).status_code == 404

"""The public preference page: a signed link, Chinese by default, the choice stored and then
applied by the next launch; a forged or altered link is not found."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.campaigns import caps, preferences
from hongyan.db.scope import unscoped
from hongyan.db.tables import contacts
from hongyan.runtime import Runtime
from tests.campaigns.support import make_shop


def test_preference_page(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    with runtime.engine.connect() as conn:
        contact_id = conn.execute(unscoped(sa.select(sa.func.min(contacts.c.id)), "t")).scalar_one()
    secret = runtime.settings.session_secret
    url = preferences.link("https://sms.example", secret, shop.tenant_id, contact_id)
    path = url.removeprefix("https://sms.example")
    page = client.get(path)
    assert page.status_code == 200 and "短信接收偏好" in page.text and "****" in page.text
    assert "Message preferences" in client.get(f"{path}?lang=en").text
    saved = client.post(path, data={"frequency": "monthly"})
    assert saved.status_code == 200 and "已保存" in saved.text
    with runtime.engine.connect() as conn:
        assert caps.preference_of(conn, shop.tenant_id, contact_id) == "monthly"
    assert client.post(path, data={"frequency": "daily"}).status_code == 422
    assert client.get(path[:-3] + "abc").status_code == 404
    forged = preferences.token("another-secret", shop.tenant_id, contact_id)
    assert client.get(f"/p/{forged}").status_code == 404

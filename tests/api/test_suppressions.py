"""/api/v1/suppressions: blocks stop sends at once, opt-outs revoke consent, tenants stay apart."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import template_versions
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth
from tests.content.support import approved_version

ME = "+8613812345678"


def test_block_send_refused_and_lifted(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, other = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    r = client.post("/api/v1/suppressions", headers=auth(key), json={"to": ME})
    assert r.status_code == 201 and r.json() == {
        "to": "138****5678",
        "reason": "manual",
        "added": True,
    }
    again = client.post("/api/v1/suppressions", headers=auth(key), json={"to": ME}).json()
    assert again["added"] is False
    sent = client.post("/api/v1/messages", headers=auth(key), json={"to": ME, "text": "hi"})
    assert sent.status_code == 422 and sent.json()["code"] == "number_suppressed"
    # Another tenant's list is its own.
    assert client.get("/api/v1/suppressions", headers=auth(other)).json() == []
    ok = client.post("/api/v1/messages", headers=auth(other), json={"to": ME, "text": "hi"})
    assert ok.status_code == 202
    [row] = client.get("/api/v1/suppressions", headers=auth(key)).json()
    assert row["to"] == "138****5678" and row["scope"] == "all" and "13812345678" not in str(row)
    assert (
        client.delete(f"/api/v1/suppressions/{row['id']}", headers=auth(other)).status_code == 404
    )
    assert client.delete(f"/api/v1/suppressions/{row['id']}", headers=auth(key)).status_code == 204
    after = client.post("/api/v1/messages", headers=auth(key), json={"to": ME, "text": "hi"})
    assert after.status_code == 202


def test_opt_out_blocks_marketing_only_and_is_permanent(
    client: TestClient, runtime: Runtime
) -> None:
    tid, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    body = {"to": ME, "reason": "opt_out", "detail": "told the shop assistant"}
    assert client.post("/api/v1/suppressions", headers=auth(key), json=body).status_code == 201
    # Marketing goes out with an approved template only (hongyan.content.gate).
    promo = approved_version(runtime, tid, "【鸿雁测试】周末第二杯半价，今晚21点前有效，回T退订")
    with runtime.engine.connect() as conn:
        template_id = conn.execute(
            TenantScope(tid)
            .select(template_versions, template_versions.c.template_id)
            .where(template_versions.c.id == promo)
        ).scalar_one()
    mkt = {"to": ME, "template_id": template_id}
    r = client.post("/api/v1/messages", headers=auth(key), json=mkt)
    assert r.status_code == 422 and r.json()["details"] == {"reason": "opt_out"}
    note = {"to": ME, "text": "【鸿雁】订单已发货", "category": "notification"}
    assert client.post("/api/v1/messages", headers=auth(key), json=note).status_code == 202
    [row] = client.get("/api/v1/suppressions", headers=auth(key)).json()
    assert client.delete(f"/api/v1/suppressions/{row['id']}", headers=auth(key)).status_code == 404
    with runtime.engine.connect() as conn:
        consent = suppression.current_consent(conn, runtime.keyring, tid, ME, "marketing")
    assert consent is not None and consent["action"] == "revoked" and consent["source"] == "api"


def test_bad_input_and_roles(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "tea2", Role.ANALYST)
    for payload in (
        {"to": "13812345678"},
        {"to": ME, "reason": "invalid"},
        {"to": ME, "reason": "x"},
    ):
        r = client.post("/api/v1/suppressions", headers=auth(key), json=payload)
        assert r.status_code == 422, payload
    r = client.post("/api/v1/suppressions", headers=auth(analyst), json={"to": ME})
    assert r.status_code == 403
    assert client.get("/api/v1/suppressions", headers=auth(analyst)).status_code == 200

"""/api/v1/webhooks: the secret shown once, owner only, another tenant's ids answer 404, and a
test event really reaches a receiver, signed, and shows in the delivery log."""

from __future__ import annotations

import asyncio
import random

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from hongyan.webhooks.delivery import Worker
from tests.api.test_api import _tenant_with_key, auth
from tests.webhooks.conftest import Receiver, closed_port


def deliver_once(runtime: Runtime, **kw: object) -> int:
    async def go() -> int:
        async with Worker(runtime, owner="api-test", rng=random.Random(0), **kw) as w:  # type: ignore[arg-type]
            return await w.pass_once()

    return asyncio.run(asyncio.wait_for(go(), 30))


def test_lifecycle(client: TestClient, runtime: Runtime, receiver: Receiver) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OWNER)
    h = auth(key)
    r = client.post(
        "/api/v1/webhooks",
        headers=h,
        json={"url": receiver.url, "events": ["message.status"], "description": "ERP"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    eid, secret = created["id"], created["secret"]
    assert (
        secret.startswith("whsec_")
        and created["active"]
        and created["events"] == ["message.status"]
    )
    receiver.secret = secret
    # Never shown again.
    shown = client.get(f"/api/v1/webhooks/{eid}", headers=h).json()
    assert "secret" not in shown and shown["url"] == receiver.url and shown["description"] == "ERP"
    listed = client.get("/api/v1/webhooks", headers=h).json()
    assert [w["id"] for w in listed] == [eid] and secret not in str(listed)
    # Defaults: every message event.
    other = client.post("/api/v1/webhooks", headers=h, json={"url": receiver.url}).json()
    assert other["events"] == ["message.status", "message.reply", "message.opt_out"]
    assert client.delete(f"/api/v1/webhooks/{other['id']}", headers=h).status_code == 204

    # A test event goes out signed and lands in the log.
    r = client.post(f"/api/v1/webhooks/{eid}/test", headers=h)
    assert r.status_code == 202 and r.json()["state"] == "pending"
    assert r.json()["event"] == "webhook.test"
    assert deliver_once(runtime) == 1
    (got,) = receiver.received
    assert got.verified and got.json["type"] == "webhook.test" and got.json["webhook"]["id"] == eid
    page = client.get(f"/api/v1/webhooks/{eid}/deliveries", headers=h).json()
    (item,) = page["items"]
    assert page["next_before"] is None
    assert item["state"] == "delivered" and item["attempt_log"][0]["status_code"] == 200
    assert item["payload"] == got.json

    # Rotation: the next request is signed with the new secret only.
    new = client.post(f"/api/v1/webhooks/{eid}/rotate-secret", headers=h).json()
    assert new["id"] == eid and new["secret"] != secret
    client.post(f"/api/v1/webhooks/{eid}/test", headers=h)
    deliver_once(runtime)
    assert not receiver.received[1].verified
    receiver.secret = new["secret"]
    client.post(f"/api/v1/webhooks/{eid}/test", headers=h)
    deliver_once(runtime)
    assert receiver.received[2].verified

    # PATCH: events and active; a bad URL changes nothing.
    r = client.patch(f"/api/v1/webhooks/{eid}", headers=h, json={"events": ["*"], "active": False})
    assert r.status_code == 200 and r.json()["events"] == ["*"] and not r.json()["active"]
    r = client.patch(f"/api/v1/webhooks/{eid}", headers=h, json={"url": "ftp://x", "active": True})
    assert r.status_code == 422 and r.json()["code"] == "invalid_webhook_url"
    assert not client.get(f"/api/v1/webhooks/{eid}", headers=h).json()["active"]
    assert client.post(f"/api/v1/webhooks/{eid}/test", headers=h).status_code == 409

    # Paging through the log.
    page = client.get(f"/api/v1/webhooks/{eid}/deliveries?limit=2", headers=h).json()
    assert len(page["items"]) == 2 and page["next_before"] == page["items"][-1]["id"]
    rest = client.get(
        f"/api/v1/webhooks/{eid}/deliveries?limit=2&before={page['next_before']}", headers=h
    ).json()
    assert [d["id"] for d in rest["items"]] == [item["id"]]
    assert client.get(f"/api/v1/webhooks/{eid}/deliveries?state=lost", headers=h).status_code == 422

    assert client.delete(f"/api/v1/webhooks/{eid}", headers=h).status_code == 204
    assert client.get(f"/api/v1/webhooks/{eid}", headers=h).status_code == 404
    actions = [e["action"] for e in client.get("/api/v1/audit", headers=h).json()]
    assert {"webhook.create", "webhook.update", "webhook.delete", "webhook.test"} <= set(actions)


def test_redeliver_a_dead_delivery(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OWNER)
    h = auth(key)
    eid = client.post(
        "/api/v1/webhooks", headers=h, json={"url": f"http://127.0.0.1:{closed_port()}/"}
    ).json()["id"]
    did = client.post(f"/api/v1/webhooks/{eid}/test", headers=h).json()["id"]
    r = client.post(f"/api/v1/webhooks/deliveries/{did}/redeliver", headers=h)
    assert r.status_code == 409 and r.json()["code"] == "webhook_delivery_not_dead"
    deliver_once(runtime, max_attempts=1)
    (dead,) = client.get(f"/api/v1/webhooks/{eid}/deliveries", headers=h).json()["items"]
    assert dead["state"] == "dead" and dead["attempts"] == 1 and dead["last_error"]
    r = client.post(f"/api/v1/webhooks/deliveries/{did}/redeliver", headers=h)
    assert r.status_code == 202 and r.json()["state"] == "pending"
    assert len(r.json()["attempt_log"]) == 1  # the log is kept


def test_bad_input_is_typed_and_writes_nothing(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OWNER)
    h = auth(key)
    runtime.settings = runtime.settings.model_copy(update={"webhook_allow_private": False})
    for body, code in [
        ({"url": "http://127.0.0.1:8080/hook"}, "webhook_address_refused"),
        ({"url": "http://169.254.169.254/latest"}, "webhook_address_refused"),
        ({"url": "https://user:pw@hooks.example.com/"}, "invalid_webhook_url"),
        ({"url": "gopher://hooks.example.com/"}, "invalid_webhook_url"),
        ({"url": "http://127.0.0.1/", "events": ["message.sent"]}, "unknown_webhook_event"),
        ({"url": "http://127.0.0.1/", "events": []}, "unknown_webhook_event"),
        ({"events": ["*"]}, "validation_failed"),
        ({"url": "http://127.0.0.1/", "description": "x" * 201}, "validation_failed"),
    ]:
        r = client.post("/api/v1/webhooks", headers=h, json=body)
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)
        assert r.json()["message"]["zh"] and r.json()["message"]["en"]
    assert client.get("/api/v1/webhooks", headers=h).json() == []
    production = runtime.settings.model_copy(update={"env": "production"})
    runtime.settings = production
    r = client.post("/api/v1/webhooks", headers=h, json={"url": "http://hooks.example.com/"})
    assert r.status_code == 422 and "https" in r.json()["message"]["en"]


def test_owner_only_and_foreign_ids_are_404(client: TestClient, runtime: Runtime) -> None:
    _, a_key = _tenant_with_key(runtime, "tea-a", Role.OWNER)
    _, b_key = _tenant_with_key(runtime, "tea-b", Role.OWNER)
    _, operator = _tenant_with_key(runtime, "tea-c", Role.OPERATOR)
    a = auth(a_key)
    eid = client.post("/api/v1/webhooks", headers=a, json={"url": "http://127.0.0.1:9/"}).json()[
        "id"
    ]
    did = client.post(f"/api/v1/webhooks/{eid}/test", headers=a).json()["id"]
    b = auth(b_key)
    for method, path, body in [
        ("GET", f"/api/v1/webhooks/{eid}", None),
        ("PATCH", f"/api/v1/webhooks/{eid}", {"active": False}),
        ("DELETE", f"/api/v1/webhooks/{eid}", None),
        ("POST", f"/api/v1/webhooks/{eid}/rotate-secret", None),
        ("POST", f"/api/v1/webhooks/{eid}/test", None),
        ("GET", f"/api/v1/webhooks/{eid}/deliveries", None),
        ("POST", f"/api/v1/webhooks/deliveries/{did}/redeliver", None),
    ]:
        r = client.request(method, path, headers=b, json=body)
        assert r.status_code == 404, (method, path, r.text)
        r = client.request(method, path, headers=auth(operator), json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert client.get("/api/v1/webhooks", headers=b).json() == []
    # A's endpoint is untouched.
    shown = client.get(f"/api/v1/webhooks/{eid}", headers=a).json()
    assert shown["active"]
    (d,) = client.get(f"/api/v1/webhooks/{eid}/deliveries", headers=a).json()["items"]
    assert d["id"] == did and d["state"] == "pending"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/webhooks"]) == {"get", "post"}
    assert set(paths["/api/v1/webhooks/{endpoint_id}"]) == {"get", "patch", "delete"}
    for p in ("rotate-secret", "test"):
        assert "post" in paths[f"/api/v1/webhooks/{{endpoint_id}}/{p}"]
    assert "get" in paths["/api/v1/webhooks/{endpoint_id}/deliveries"]
    assert "post" in paths["/api/v1/webhooks/deliveries/{delivery_id}/redeliver"]

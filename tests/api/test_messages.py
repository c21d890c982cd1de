"""POST /api/v1/messages and GET /api/v1/messages/{id}: queued, masked, idempotent, isolated."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth


def test_send_and_show(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={
            "to": "+8613812345678",
            "text": "【鸿雁测试】您的订单已发货",
            "category": "notification",
        },
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "planned" and body["created"]
    shown = client.get(f"/api/v1/messages/{body['id']}", headers=auth(key)).json()
    assert shown["to"] == "138****5678" and shown["parts"] == 1 and shown["encoding"] == "ucs2"
    assert "13812345678" not in str(shown)


def test_idempotency_header_and_conflict(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    msg = {"to": "+8613812345678", "text": "验证码 4821", "category": "verification"}
    headers = {**auth(key), "Idempotency-Key": "order-77"}
    first = client.post("/api/v1/messages", headers=headers, json=msg).json()
    second = client.post("/api/v1/messages", headers=headers, json=msg).json()
    assert first["id"] == second["id"] and first["created"] and not second["created"]
    r = client.post("/api/v1/messages", headers=headers, json={**msg, "text": "验证码 0000"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_conflict"


def test_bad_input_is_typed_and_queues_nothing(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    cases = [
        ({"to": "13812345678", "text": "hi"}, "invalid_number"),
        ({"to": "+8613812345678", "text": ""}, "validation_failed"),
        ({"to": "+8613812345678", "text": "hi", "category": "spam"}, "validation_failed"),
        ({"to": "+8613812345678", "text": "长" * 500}, "text_too_long"),
        (
            {"to": "+8613812345678", "text": "hi", "send_at": "2026-12-01T10:00:00"},
            "validation_failed",
        ),
    ]
    for payload, code in cases:
        r = client.post("/api/v1/messages", headers=auth(key), json=payload)
        assert r.status_code == 422 and r.json()["code"] == code, (payload, r.text)
    r = client.post(
        "/api/v1/messages", headers=auth(key), json={"to": "+8613812345678", "text": "ok"}
    )
    assert r.json()["id"] == 1  # nothing was written before


def test_roles_and_tenants(client: TestClient, runtime: Runtime) -> None:
    _, a_key = _tenant_with_key(runtime, "tea-a", Role.OPERATOR)
    _, analyst = _tenant_with_key(runtime, "tea-c", Role.ANALYST)
    _, b_key = _tenant_with_key(runtime, "tea-b", Role.OPERATOR)
    mid = client.post(
        "/api/v1/messages", headers=auth(a_key), json={"to": "+8613812345678", "text": "hi"}
    ).json()["id"]
    assert client.get(f"/api/v1/messages/{mid}", headers=auth(b_key)).status_code == 404
    r = client.post(
        "/api/v1/messages", headers=auth(analyst), json={"to": "+8613812345678", "text": "hi"}
    )
    assert r.status_code == 403


def test_template_and_params(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    ok = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={
            "to": "+8613812345678",
            "template": "【鸿雁测试】{name}您好，验证码{code}",
            "params": {"name": "李女士", "code": 4821},
            "category": "verification",
        },
    )
    assert ok.status_code == 202, ok.text
    shown = client.get(f"/api/v1/messages/{ok.json()['id']}", headers=auth(key)).json()
    assert shown["text"] == "【鸿雁测试】李女士您好，验证码4821"
    cases = [
        (
            {"template": "{name}", "params": {"name": "x", "extra": "y"}},
            "template_parameter_unknown",
        ),
        ({"template": "{name}{code}", "params": {"name": "x"}}, "template_parameter_missing"),
        ({"template": "{name.__class__}", "params": {}}, "template_invalid"),
        ({"text": "hi", "template": "{a}"}, "validation_failed"),
        ({"text": "hi", "params": {"a": "b"}}, "validation_failed"),
        ({}, "validation_failed"),
    ]
    for extra, code in cases:
        r = client.post(
            "/api/v1/messages", headers=auth(key), json={"to": "+8613812345678", **extra}
        )
        assert r.status_code == 422 and r.json()["code"] == code, (extra, r.text)


def test_an_id_past_bigint_is_a_422_and_queues_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    """A number past a BIGINT reached the driver: on SQLite an OverflowError, a 500 (found by the
    fuzz). The API now refuses it at the door; the largest BIGINT is still only not found."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    too_big, largest = 2**63, 2**63 - 1
    for path in (f"/api/v1/messages/{too_big}", f"/api/v1/messages/{too_big}/timeline"):
        r = client.get(path, headers=auth(key))
        assert r.status_code == 422 and r.json()["code"] == "validation_failed", path
    assert client.get(f"/api/v1/messages/{largest}", headers=auth(key)).status_code == 404
    # messages are keyed by BIGINT: past an INTEGER is still only not found
    assert client.get(f"/api/v1/messages/{2**31}", headers=auth(key)).status_code == 404
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": "+8613812345678", "template_id": 2**31},  # templates: INTEGER
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_failed"
    assert client.get("/api/v1/messages", headers=auth(key)).json()["total"] == 0


def test_send_at_outside_the_years_a_timestamp_holds_is_a_422(
    client: TestClient, runtime: Runtime
) -> None:
    """Year 1 at +14:00 is before the first instant in UTC, and 9999-12-31 plus the validity is
    past the last: both were an OverflowError, a 500 (found by the fuzz)."""
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59+00:00", "1969-12-31T23:59Z"):
        r = client.post(
            "/api/v1/messages",
            headers=auth(key),
            json={"to": "+8613812345678", "text": "hi", "send_at": when},
        )
        assert r.status_code == 422 and r.json()["code"] == "validation_failed", when
        assert r.json()["message"]["zh"] == "send_at 须在 1970–9998 年之间"
    assert client.get("/api/v1/messages", headers=auth(key)).json()["total"] == 0
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": "+8613812345678", "text": "hi", "send_at": "9998-12-30T10:00:00+08:00"},
    )
    assert r.status_code == 202 and r.json()["state"] == "planned"

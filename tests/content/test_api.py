"""The content API end to end: lint, templates through review by staff, marketing sends."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from hongyan.staff import service as staff
from hongyan.tenants import service as tenants
from tests.api.test_api import _tenant_with_key, auth

SIG = "【鸿雁测试】"
ME = "+8613812345678"
PROMO = f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订"


def staff_key(runtime: Runtime, email: str = "rev@platform.test") -> str:
    with runtime.engine.begin() as conn:
        member = staff.create(
            conn, runtime.clock, email=email, name="审核员", password="reviewer-password-1"
        )
        _id, key = staff.create_key(conn, runtime.clock, member, "ci")
    return key


def test_lint_endpoint(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    r = client.post("/api/v1/lint", headers=auth(key), json={"text": "年中大促，免 费领取"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["ok"] and body["encoding"] == "ucs2" and body["parts"] == 1
    rules = {f["rule"] for f in body["findings"]}
    assert {"signature.missing", "unsubscribe.missing", "word.sensitive", "copy.vague"} <= rules
    sensitive = next(f for f in body["findings"] if f["rule"] == "word.sensitive")
    assert sensitive["message"]["zh"] and sensitive["message"]["en"]
    assert sensitive["fix"] == {"start": 5, "end": 8, "text": "0元体验", "safe": True}
    fixed = client.post(
        "/api/v1/lint", headers=auth(key), json={"text": "年中大促，免 费领取", "fix": True}
    ).json()
    assert fixed["fixed"] and fixed["text"] == f"{SIG}年中大促，0元体验领取，回T退订"
    assert fixed["ok"]
    clean = client.post("/api/v1/lint", headers=auth(key), json={"text": PROMO}).json()
    assert clean["ok"] and clean["findings"] == []


def test_lint_needs_a_role_that_reads_templates(client: TestClient, runtime: Runtime) -> None:
    """The findings hold the tenant's own word lists, which an auditor may not read."""
    _, key = _tenant_with_key(runtime, "tea", Role.AUDITOR)
    r = client.post("/api/v1/lint", headers=auth(key), json={"text": "年中大促"})
    assert r.status_code == 403, r.text


def test_lint_bad_input(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.ANALYST)
    for text, code in (
        ("", "text_empty"),
        ("好" * 100_000, "text_too_long"),
        ("a\ud800", "validation_failed"),  # pydantic refuses the lone surrogate itself
    ):
        # json.dumps escapes the lone surrogate, as a client's JSON would carry it
        raw = json.dumps({"text": text}).encode()
        headers = {**auth(key), "Content-Type": "application/json"}
        r = client.post("/api/v1/lint", headers=headers, content=raw)
        assert r.status_code == 422 and r.json()["code"] == code, (code, r.text)
        assert r.json()["message"]["zh"]
    r = client.post("/api/v1/lint", headers=auth(key), json={"text": "x", "category": "spam"})
    assert r.status_code == 422
    syntax = client.post(
        "/api/v1/lint", headers=auth(key), json={"text": f"{SIG}{{name.__class__}}"}
    ).json()
    assert "placeholder.syntax" in {f["rule"] for f in syntax["findings"]}


def test_template_review_and_marketing_send(client: TestClient, runtime: Runtime) -> None:
    tid, key = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    reviewer = staff_key(runtime)
    # marketing as free text is refused at the outbox
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "text": f"{SIG}周末半价，回T退订", "category": "marketing"},
    )
    assert r.status_code == 422 and r.json()["code"] == "template_required"

    bad = client.post(
        "/api/v1/templates",
        headers=auth(key),
        json={"name": "会员日", "category": "marketing", "body": "会员日半价"},
    )
    assert bad.status_code == 201
    refused = client.post(f"/api/v1/templates/{bad.json()['id']}/submit", headers=auth(key))
    assert refused.status_code == 422 and refused.json()["code"] == "template_has_errors"
    assert {f["rule"] for f in refused.json()["details"]["findings"]} >= {"signature.missing"}

    t = client.patch(
        f"/api/v1/templates/{bad.json()['id']}", headers=auth(key), json={"body": PROMO}
    )
    assert t.status_code == 200 and t.json()["version"] == 1 and t.json()["status"] == "draft"
    template_id = t.json()["id"]
    sent = client.post(f"/api/v1/templates/{template_id}/submit", headers=auth(key))
    assert sent.status_code == 200 and sent.json()["status"] == "pending"
    # not approved yet: no sending with it
    r = client.post(
        "/api/v1/messages", headers=auth(key), json={"to": ME, "template_id": template_id}
    )
    assert r.status_code == 422 and r.json()["code"] == "template_not_approved"

    # the tenant's key cannot reach the queue; the reviewer's key cannot reach tenant routes
    assert client.get("/api/v1/review/queue", headers=auth(key)).status_code == 403
    assert client.get("/api/v1/templates", headers=auth(reviewer)).status_code == 401
    queue = client.get("/api/v1/review/queue", headers=auth(reviewer)).json()
    [item] = [q for q in queue if q["kind"] == "template"]
    assert item["tenant"] == "tea" and item["body"] == PROMO and item["version"] == 1
    no_reason = client.post(
        f"/api/v1/review/template/{item['id']}/reject", headers=auth(reviewer), json={}
    )
    assert no_reason.status_code == 422
    ok = client.post(f"/api/v1/review/template/{item['id']}/approve", headers=auth(reviewer))
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    twice = client.post(f"/api/v1/review/template/{item['id']}/approve", headers=auth(reviewer))
    assert twice.status_code == 409

    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "template_id": template_id, "params": {"name": "李女士"}},
    )
    assert r.status_code == 202, r.text
    shown = client.get(f"/api/v1/messages/{r.json()['id']}", headers=auth(key)).json()
    assert shown["text"] == f"{SIG}李女士，会员日第二杯半价，今晚21点前有效，回T退订"
    assert shown["category"] == "marketing"
    # values are checked: a forbidden word in a parameter refuses the message
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "template_id": template_id, "params": {"name": "免费"}},
    )
    assert r.status_code == 422 and r.json()["code"] == "content_rejected"
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "template_id": template_id, "params": {"nme": "x"}},
    )
    assert r.json()["code"] == "template_parameter_unknown"
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "template_id": template_id, "category": "notification"},
    )
    assert r.status_code == 422

    # editing the approved template makes version 2, a draft; version 1 keeps sending
    edited = client.patch(
        f"/api/v1/templates/{template_id}",
        headers=auth(key),
        json={"body": PROMO.replace("半价", "8折")},
    ).json()
    assert (edited["version"], edited["status"], edited["live_version"]) == (2, "draft", 1)
    again = client.post(
        "/api/v1/messages", headers=auth(key), json={"to": ME, "template_id": template_id}
    )
    assert again.status_code == 202
    client.post(f"/api/v1/templates/{template_id}/submit", headers=auth(key))
    [pending] = client.get("/api/v1/review/queue?kind=template", headers=auth(reviewer)).json()
    runtime.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    rejected = client.post(
        f"/api/v1/review/template/{pending['id']}/reject",
        headers=auth(reviewer),
        json={"reason": "“8折”须注明适用商品"},
    )
    assert rejected.json()["status"] == "rejected"
    shown_t = client.get(f"/api/v1/templates/{template_id}", headers=auth(key)).json()
    assert shown_t["status"] == "rejected" and shown_t["reason"] == "“8折”须注明适用商品"
    assert shown_t["live_version"] == 1
    recent = client.get("/api/v1/review/recent", headers=auth(reviewer)).json()
    assert [r["status"] for r in recent[:2]] == ["rejected", "approved"]

    # every decision is in the tenant's audit log, by the reviewer
    with runtime.engine.connect() as conn:
        from hongyan.security import audit

        actions = [(e["action"], e["actor"]) for e in audit.recent(conn, tid)]
    assert ("template.approve", "staff:1") in actions and ("template.reject", "staff:1") in actions


def test_signatures_are_submitted_and_reviewed(client: TestClient, runtime: Runtime) -> None:
    tid, owner = _tenant_with_key(runtime, "tea", Role.OWNER)
    _, operator = _tenant_with_key(runtime, "tea-2", Role.OPERATOR)
    reviewer = staff_key(runtime)
    body = {"text": "【鸿雁新店】", "note": "新门店店招"}
    assert client.post("/api/v1/signatures", headers=auth(operator), json=body).status_code == 403
    made = client.post("/api/v1/signatures", headers=auth(owner), json=body)
    assert made.status_code == 201 and made.json()["status"] == "pending"
    bad = client.post("/api/v1/signatures", headers=auth(owner), json={"text": "鸿雁"})
    assert bad.status_code == 422
    lint = client.post(
        "/api/v1/lint", headers=auth(owner), json={"text": "【鸿雁新店】今晚有效，回T退订"}
    ).json()
    [f] = [f for f in lint["findings"] if f["rule"] == "signature.unapproved"]
    assert f["severity"] == "warning"  # pending
    [item] = client.get("/api/v1/review/queue?kind=signature", headers=auth(reviewer)).json()
    assert item["text"] == "【鸿雁新店】" and item["note"] == "新门店店招"
    r = client.post(
        f"/api/v1/review/signature/{item['id']}/reject",
        headers=auth(reviewer),
        json={"reason": "缺少营业执照"},
    )
    assert r.json()["status"] == "rejected"
    again = client.post(
        "/api/v1/signatures", headers=auth(owner), json={"text": "【鸿雁新店】", "note": "附执照"}
    )
    assert again.status_code == 201 and again.json()["status"] == "pending"
    client.post(f"/api/v1/review/signature/{item['id']}/approve", headers=auth(reviewer))
    sigs = {s["text"]: s for s in client.get("/api/v1/signatures", headers=auth(owner)).json()}
    assert sigs["【鸿雁新店】"]["status"] == "approved" and sigs["【鸿雁测试】"]["is_default"]
    made_default = client.post(f"/api/v1/signatures/{item['id']}/default", headers=auth(owner))
    assert made_default.json()["is_default"]
    with runtime.engine.connect() as conn:
        assert [s["text"] for s in tenants.signatures_of(conn, tid) if s["is_default"]] == [
            "【鸿雁新店】"
        ]


def test_tenants_words_and_isolation(client: TestClient, runtime: Runtime) -> None:
    _, a = _tenant_with_key(runtime, "tea", Role.OPERATOR)
    _, b = _tenant_with_key(runtime, "bakery", Role.OPERATOR)
    r = client.post(
        "/api/v1/words",
        headers=auth(a),
        json={"list": "sensitive", "term": "秒杀", "replacement": "限时抢购"},
    )
    assert r.status_code == 201
    text = f"{SIG}秒 杀开始，今晚21点前有效，回T退订"
    found = client.post("/api/v1/lint", headers=auth(a), json={"text": text}).json()
    assert [f["term"] for f in found["findings"] if f["rule"] == "word.sensitive"] == ["秒杀"]
    other = client.post("/api/v1/lint", headers=auth(b), json={"text": text}).json()
    assert other["findings"] == []
    assert client.get("/api/v1/words", headers=auth(b)).json() == []
    assert client.delete(f"/api/v1/words/{r.json()['id']}", headers=auth(b)).status_code == 404
    dup = client.post("/api/v1/words", headers=auth(a), json={"list": "sensitive", "term": "秒杀"})
    assert dup.status_code == 409
    made = client.post(
        "/api/v1/templates",
        headers=auth(a),
        json={"name": "x", "category": "notification", "body": f"{SIG}您好"},
    ).json()
    assert client.get(f"/api/v1/templates/{made['id']}", headers=auth(b)).status_code == 404
    assert client.delete(f"/api/v1/words/{r.json()['id']}", headers=auth(a)).status_code == 204


def test_a_notifications_only_tenant_cannot_send_marketing(
    client: TestClient, runtime: Runtime
) -> None:
    tid, key = _tenant_with_key(runtime, "bank", Role.OPERATOR)
    with runtime.engine.begin() as conn:
        tenants.update_policy(conn, runtime.clock, tid, marketing_allowed=False)
    r = client.post(
        "/api/v1/messages",
        headers=auth(key),
        json={"to": ME, "text": f"{SIG}理财产品上新，回T退订", "category": "marketing"},
    )
    assert r.status_code == 403 and r.json()["code"] == "marketing_not_allowed"
    lint = client.post("/api/v1/lint", headers=auth(key), json={"text": PROMO}).json()
    assert "category.forbidden" in {f["rule"] for f in lint["findings"]}
    note = client.post(
        "/api/v1/messages", headers=auth(key), json={"to": ME, "text": f"{SIG}您的账户余额变动"}
    )
    assert note.status_code == 202


def test_an_id_past_an_integer_column_is_a_422(client: TestClient, runtime: Runtime) -> None:
    """Templates, signatures and words are keyed by INTEGER, 32 bits on PostgreSQL: an id past it
    was "integer out of range" there, a 500 (found by the fuzz). It is refused at the door now,
    on either database; the largest id is only not found."""
    _, key = _tenant_with_key(runtime, "tea", Role.OWNER)
    for method, path in [
        ("GET", "/api/v1/templates/{}"),
        ("POST", "/api/v1/signatures/{}/default"),
        ("DELETE", "/api/v1/words/{}"),
    ]:
        r = client.request(method, path.format(2**31), headers=auth(key))
        assert r.status_code == 422 and r.json()["code"] == "validation_failed", path
        assert client.request(method, path.format(2**31 - 1), headers=auth(key)).status_code == 404

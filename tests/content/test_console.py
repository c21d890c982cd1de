"""The content pages and the reviewer's console, over HTTP as a browser would post them."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.security import audit
from hongyan.staff import service as staff
from hongyan.tenants import service as tenants
from tests.web.test_console import csrf_field, login, make_tenant

SIG = "【鸿雁茶饮】"
PROMO = f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订"
REVIEWER = "rev@platform.test"
REVIEWER_PASSWORD = "reviewer-password-1"


def htmx(csrf: str) -> dict[str, str]:
    return {"HX-Request": "true", "X-CSRF-Token": csrf}


def make_reviewer(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        staff.create(conn, runtime.clock, email=REVIEWER, name="审核员", password=REVIEWER_PASSWORD)


def staff_login(
    client: TestClient, email: str = REVIEWER, password: str = REVIEWER_PASSWORD
) -> httpx.Response:
    page = client.get("/staff/login")
    assert page.status_code == 200 and 'action="/staff/login"' in page.text
    return client.post(
        "/staff/login",
        data={"email": email, "password": password, "csrf_token": csrf_field(page.text)},
        follow_redirects=False,
    )


def test_editor_lints_as_one_types_and_fixes(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    assert login(client).status_code == 303
    page = client.get("/console/content/new")
    assert page.status_code == 200 and 'hx-post="/console/content/lint"' in page.text
    csrf = csrf_field(page.text)
    panel = client.post(
        "/console/content/lint",
        data={"body": "年中大促，免 费领取", "category": "marketing"},
        headers=htmx(csrf),
    )
    assert panel.status_code == 200
    assert 'id="lint-chars">10<' in panel.text and 'id="lint-parts">1<' in panel.text
    assert 'data-rule="word.sensitive"' in panel.text and "<mark" in panel.text
    assert "免 费" in panel.text and "0元体验" in panel.text
    rules = re.findall(r'data-rule="([a-z._]+)"', panel.text)
    fixed = client.post(
        "/console/content/fix",
        data={
            "body": "年中大促，免 费领取",
            "category": "marketing",
            "index": str(rules.index("word.sensitive")),
        },
        headers=htmx(csrf),
    )
    assert fixed.status_code == 200 and ">年中大促，0元体验领取</textarea>" in fixed.text
    # without the CSRF token nothing is linted
    assert client.post("/console/content/lint", data={"body": "x"}).status_code == 403
    empty = client.post(
        "/console/content/lint", data={"body": "", "category": "marketing"}, headers=htmx(csrf)
    )
    assert empty.status_code == 200 and "lint-chars" not in empty.text


def test_templates_submitted_and_reviewed_in_the_consoles(
    client: TestClient, runtime: Runtime
) -> None:
    make_tenant(runtime)
    make_reviewer(runtime)
    login(client)
    csrf = csrf_field(client.get("/console/content/new").text)
    bad = client.post(
        "/console/content/new",
        data={
            "csrf_token": csrf,
            "name": "会员日",
            "category": "marketing",
            "body": "半价",
            "action": "submit",
        },
    )
    assert bad.status_code == 422 and "模板存在错误" in bad.text  # nothing was stored
    assert "会员日" not in client.get("/console/content").text
    made = client.post(
        "/console/content/new",
        data={
            "csrf_token": csrf,
            "name": "会员日",
            "category": "marketing",
            "body": PROMO,
            "action": "submit",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303
    editor = client.get(made.headers["location"])
    assert "审核中" in editor.text and "会员日" in editor.text
    listing = client.get("/console/content")
    assert "会员日" in listing.text and "审核中" in listing.text

    # the tenant's session does not open the review console, the staff's does
    assert client.get("/staff/review", follow_redirects=False).headers["location"] == "/staff/login"
    assert staff_login(client, password="wrong-password-x").status_code == 401
    assert staff_login(client).status_code == 303
    queue = client.get("/staff/review")
    assert queue.status_code == 200 and "会员日" in queue.text and "TEA-HOUSE" not in queue.text
    assert "鸿雁茶饮" in queue.text and "平台审核员" in queue.text
    version = re.search(r"/staff/review/template/(\d+)/approve", queue.text)
    assert version is not None
    staff_csrf = csrf_field(queue.text)
    decided = client.post(
        f"/staff/review/template/{version.group(1)}/approve", headers=htmx(staff_csrf)
    )
    assert decided.status_code == 200 and "已通过" in decided.text
    again = client.post(
        f"/staff/review/template/{version.group(1)}/approve", headers=htmx(staff_csrf)
    )
    assert "已被其他审核员处理" in again.text or "不在待审核状态" in again.text
    no_csrf = client.post(
        f"/staff/review/template/{version.group(1)}/approve", headers={"HX-Request": "true"}
    )
    assert no_csrf.status_code == 403

    editor = client.get(made.headers["location"])
    assert "已通过" in editor.text
    with runtime.engine.connect() as conn:
        tid = tenants.get_tenant(conn, "tea-house").id
        actions = [e["action"] for e in audit.recent(conn, tid)]
    assert "template.approve" in actions and "template.submit" in actions


def test_signatures_and_words_from_the_content_page(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    make_reviewer(runtime)
    login(client)
    page = client.get("/console/content")
    csrf = csrf_field(page.text)
    client.post(
        "/console/content/signatures",
        data={"csrf_token": csrf, "text": "【鸿雁新店】", "note": "新门店"},
    )
    client.post(
        "/console/content/words",
        data={"csrf_token": csrf, "list": "sensitive", "term": "秒杀", "replacement": "限时抢购"},
    )
    page = client.get("/console/content")
    assert "【鸿雁新店】" in page.text and "审核中" in page.text and "秒杀" in page.text
    bad = client.post("/console/content/signatures", data={"csrf_token": csrf, "text": "鸿雁"})
    assert bad.status_code == 200 and "签名须为全角括号" in bad.text  # shown as a flash
    staff_login(client)
    queue = client.get("/staff/review").text
    sig = re.search(r"/staff/review/signature/(\d+)/reject", queue)
    assert sig is not None
    rejected = client.post(
        f"/staff/review/signature/{sig.group(1)}/reject",
        data={"reason": "缺少营业执照", "csrf_token": csrf_field(queue)},
        follow_redirects=False,
    )
    assert rejected.status_code == 303
    assert "缺少营业执照" in client.get("/console/content").text

"""The console shell: login, logout, CSRF, language, sessions, local assets, tenant isolation."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.api.deps import SESSION_COOKIE
from hongyan.clock import FixedClock
from hongyan.db.scope import unscoped
from hongyan.db.tables import sessions
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from hongyan.tenants import service
from hongyan.web import console
from hongyan.web.i18n import LANGS, MESSAGES

PASSWORD = "correct horse battery"


def make_tenant(
    runtime: Runtime,
    slug: str = "tea-house",
    name: str = "鸿雁茶饮",
    email: str = "owner@tea.example",
    signature: str = "【鸿雁茶饮】",
    user_name: str = "王小明",
) -> None:
    with runtime.engine.begin() as conn:
        tenant = service.create_tenant(
            conn, runtime.clock, slug=slug, name=name, signature=signature
        )
        service.create_user(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id=tenant.id,
            email=email,
            name=user_name,
            role="owner",
            password=PASSWORD,
        )


def csrf_field(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def login(
    client: TestClient,
    email: str = "owner@tea.example",
    password: str = PASSWORD,
    next_url: str = "/console",
) -> httpx.Response:
    page = client.get("/login")
    assert page.status_code == 200
    return client.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_field(page.text),
            "next": next_url,
        },
        follow_redirects=False,
    )


def session_count(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        stmt = unscoped(
            sa.select(sa.func.count()).select_from(sessions), "the test counts every session"
        )
        return int(conn.execute(stmt).scalar_one())


def test_login_page_is_chinese_by_default_and_english_after_switch(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    assert "登录鸿雁控制台" in page.text
    assert "邮箱" in page.text and "密码" in page.text

    switched = client.get("/lang/en?next=/login", follow_redirects=False)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login"
    page = client.get("/login")
    assert '<html lang="en">' in page.text
    assert "Log in to the Hongyan console" in page.text
    assert "登录鸿雁控制台" not in page.text

    assert client.get("/lang/fr", follow_redirects=False).status_code == 404


def test_root_redirects_to_login_when_logged_out(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_wrong_password_is_401_and_opens_no_session(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    response = login(client, password="not the password")
    assert response.status_code == 401
    assert "邮箱或密码错误" in response.text
    assert SESSION_COOKIE not in response.cookies
    assert session_count(runtime) == 0


def test_login_without_form_token_is_refused(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    client.get("/login")
    response = client.post(
        "/login",
        data={"email": "owner@tea.example", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert session_count(runtime) == 0


def test_a_nul_in_the_login_form_is_refused_not_a_500(client: TestClient, runtime: Runtime) -> None:
    """PostgreSQL cannot look up text holding U+0000: the app's handler of the database's
    DataError answers with the console's error page (422, in Chinese); SQLite finds no user."""
    make_tenant(runtime)
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"email": "owner\x00@tea.example", "password": PASSWORD,
              "csrf_token": csrf_field(page.text)},
        follow_redirects=False,
    )  # fmt: skip
    if runtime.engine.dialect.name == "postgresql":
        assert response.status_code == 422
        assert "请求中的某个值无法保存或查询" in response.text
    else:
        assert response.status_code == 401
    assert session_count(runtime) == 0


def test_login_shows_dashboard_with_real_tenant_data(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    response = login(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert session_count(runtime) == 1

    page = client.get("/console")
    assert page.status_code == 200
    for text in ("鸿雁茶饮", "【鸿雁茶饮】", "tea-house", "Asia/Shanghai", "21:00", "08:00"):
        assert text in page.text
    assert "王小明" in page.text and "所有者" in page.text
    assert '<meta name="csrf-token"' in page.text
    assert "X-CSRF-Token" in page.text
    for label in ("概览", "联系人", "人群", "内容", "活动", "发送记录", "报表", "设置"):
        assert label in page.text

    later = client.get("/console/settings")
    assert later.status_code == 200
    assert "后续版本" in later.text
    assert client.get("/console/nonsense").status_code == 404

    client.get("/lang/en", headers={"referer": "http://testserver/console"})
    page = client.get("/console")
    assert '<html lang="en">' in page.text
    assert "Dashboard" in page.text and "Quiet hours" in page.text


def test_logout_needs_the_csrf_token(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    login(client)
    page = client.get("/console")
    token = csrf_field(page.text)

    missing = client.post("/logout", follow_redirects=False)
    assert missing.status_code == 403
    assert "安全校验失败" in missing.text
    wrong = client.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert wrong.status_code == 403
    assert client.get("/console").status_code == 200  # still logged in

    old_cookie = client.cookies.get(SESSION_COOKIE)
    assert old_cookie
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    assert "您已安全退出" in client.get("/login").text

    client.cookies.set(SESSION_COOKIE, old_cookie)
    again = client.get("/console", follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login?next=")


def test_console_without_session_redirects_to_login(client: TestClient) -> None:
    response = client.get("/console/reports", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/console/reports"
    assert "请先登录" in client.get(response.headers["location"]).text


def test_expired_session_redirects_with_message(
    client: TestClient, runtime: Runtime, clock: FixedClock
) -> None:
    make_tenant(runtime)
    login(client)
    assert client.get("/console").status_code == 200
    clock.advance(timedelta(seconds=runtime.settings.session_max_age + 60))
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/console"
    page = client.get(response.headers["location"])
    assert "会话已过期，请重新登录" in page.text


@pytest.mark.parametrize(
    "target", ["//evil.example", "https://evil.example/", "/\\evil.example", "evil"]
)
def test_open_redirect_is_refused(client: TestClient, runtime: Runtime, target: str) -> None:
    make_tenant(runtime)
    response = login(client, next_url=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    lang = client.get(f"/lang/en?next={target}", follow_redirects=False)
    assert lang.headers["location"] == "/"


def test_login_honours_a_local_next(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    response = login(client, next_url="/console/contacts")
    assert response.headers["location"] == "/console/contacts"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for attr in ("src", "href"):
            value = values.get(attr)
            if value is None:
                continue
            if tag in ("script", "link", "img"):
                self.assets.append(value)
            else:
                self.links.append(value)


def test_every_referenced_asset_is_local(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    pages = [client.get("/login").text]
    login(client)
    pages += [client.get("/console").text, client.get("/console/settings").text]
    refs = _Refs()
    for html in pages:
        refs.feed(html)
        assert "http://" not in html and "https://" not in html
    assert "/static/vendor/htmx.min.js" in refs.assets
    assert "/static/console.css" in refs.assets
    for url in refs.assets + refs.links:
        assert url.startswith("/") and not url.startswith("//"), url
    for url in set(refs.assets):
        assert client.get(url).status_code == 200, url
    vendor = Path(console.__file__).parent / "static" / "vendor"
    assert (vendor / "htmx.LICENSE").read_text().strip()


def test_one_tenant_never_sees_another(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    make_tenant(
        runtime,
        slug="noodle-bar",
        name="江南面馆",
        email="boss@noodle.example",
        signature="【江南面馆】",
        user_name="李老板",
    )
    login(client)
    for path in ("/console", "/console/contacts", "/console/settings"):
        page = client.get(path).text
        assert "鸿雁茶饮" in page
        assert "江南面馆" not in page and "李老板" not in page and "noodle-bar" not in page


def test_every_template_key_is_translated() -> None:
    for key, entry in MESSAGES.items():
        for lang in LANGS:
            assert entry.get(lang), f"{key} has no {lang} text"
    templates = Path(console.__file__).parent / "templates"
    used: set[str] = set()
    for path in templates.glob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([a-z_.]+)["']\s*[,)]""", path.read_text()))
    used |= {f"role.{role.value}" for role in Role} | {f"role.{role.value}.desc" for role in Role}
    missing = used - MESSAGES.keys()
    assert not missing, missing

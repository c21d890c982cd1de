"""The console in a real browser: headless Chromium against the app served by uvicorn."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from hongyan.api.app import create_app
from hongyan.clock import FixedClock
from hongyan.runtime import Runtime
from hongyan.tenants import service
from tests.reports.seeding import seed
from tests.web.test_console import PASSWORD, make_tenant

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"CI=true but Chromium is not installed at {CHROMIUM}; run scripts/ensure-browser"
        )
    pytest.skip("Chromium not installed at /usr/bin/chromium: browser test skipped")


@contextlib.contextmanager
def console_page(live_server: str, path: str, problems: list[str]) -> Iterator[Any]:
    """A headless Chromium page logged in as the test tenant's owner and landed on ``path``;
    console errors and warnings and uncaught page errors are appended to ``problems``."""
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="zh-CN")
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live_server}/login?next={path}")
            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}{path}")
            yield page
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(runtime), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_login_dashboard_language_logout(
    live_server: str, runtime: Runtime, tmp_path: Path
) -> None:
    _require_chromium()
    # The system Chromium by path: Playwright never fetches a browser of its own here.
    from playwright.sync_api import expect, sync_playwright

    make_tenant(runtime)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
            page.goto(f"{live_server}/console")
            expect(page).to_have_url(f"{live_server}/login?next=/console")
            expect(page.locator("html")).to_have_attribute("lang", "zh-CN")

            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}/console")
            expect(page.locator(".sidenav")).to_contain_text("概览")
            expect(page.locator(".topbar")).to_contain_text("鸿雁茶饮")
            expect(page.locator("main")).to_contain_text("【鸿雁茶饮】")

            page.click("a.lang-switch")
            expect(page.locator("html")).to_have_attribute("lang", "en")
            expect(page.locator(".sidenav")).to_contain_text("Dashboard")
            expect(page.locator("main")).to_contain_text("Quiet hours")

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            page.click("form[action='/logout'] button")
            expect(page).to_have_url(f"{live_server}/login")
            expect(page.locator("#email")).to_be_visible()
            expect(page.locator(".flash")).to_contain_text("You have logged out")
        finally:
            browser.close()


def test_send_records_filter_and_timeline(
    live_server: str, runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    """Send records in Chinese: filter by the last digits (an htmx swap, no reload), open a
    message, see its timeline, and keep a screenshot."""
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    make_tenant(runtime)
    with runtime.engine.begin() as conn:
        tea = service.get_tenant(conn, "tea-house").id
    seeded = seed(runtime, clock, a=tea)
    delivered = seeded.ids["delivered"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live_server}/console/messages")
            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}/console/messages")
            expect(page.locator("h1")).to_have_text("发送记录")
            expect(page.locator("#records tbody tr")).to_have_count(8)

            page.evaluate("window.__notReloaded = true")
            page.fill("input[name=number]", "5678")
            page.click("#records button[type=submit]")
            expect(page.locator("#records tbody tr")).to_have_count(2)
            expect(page).to_have_url(re.compile(r"/console/messages\?.*number=5678"))
            assert page.evaluate("window.__notReloaded === true")  # swapped by htmx
            expect(page.locator("#records tbody")).to_contain_text("138****5678")
            expect(page.locator("#records tbody")).to_contain_text("137****5678")
            expect(page.locator("input[name=number]")).to_have_value("5678")
            page.screenshot(path=str(tmp_path / "records.png"), full_page=True)

            page.click(f"a[href='/console/messages/{delivered}']")
            expect(page).to_have_url(f"{live_server}/console/messages/{delivered}")
            expect(page.locator("h1")).to_contain_text(f"短信 #{delivered}")
            expect(page.locator("h1")).to_contain_text("已送达")
            timeline = page.locator("ol.timeline > li")
            expect(timeline).to_have_count(9)
            expect(timeline.first).to_contain_text("创建")
            expect(timeline.last).to_contain_text("好的，谢谢")
            expect(page.locator("ol.timeline")).to_contain_text(f"{delivered:04x}02")
            html = page.content()
            assert "13812345678" not in html and "+8613812345678" not in html

            shot = tmp_path / "timeline.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert shot.stat().st_size > 20_000
            assert not problems, problems  # no CSP refusal, no script error
        finally:
            browser.close()

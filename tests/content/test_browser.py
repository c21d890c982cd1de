"""The template editor and the review queue in headless Chromium: typing updates the count and
the findings live, a fix is one click, and a reviewer approves from the queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from hongyan.runtime import Runtime
from tests.content.test_console import REVIEWER, REVIEWER_PASSWORD, make_reviewer
from tests.web.test_browser import (  # noqa: F401  (live_server is a fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    _require_chromium,
    live_server,
)
from tests.web.test_console import PASSWORD, make_tenant

pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


def test_editor_counts_and_finds_as_one_types(
    live_server: str,  # noqa: F811  (the fixture)
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    make_tenant(runtime)
    make_reviewer(runtime)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live_server}/console/content/new")
            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}/console/content/new")
            expect(page.locator("h1")).to_contain_text("新建模板")

            page.fill("input[name=name]", "会员日")
            body = page.locator("#body")
            body.click()
            page.keyboard.type("【鸿雁茶饮】会员日免费")
            expect(page.locator("#lint-chars")).to_have_text("11")
            expect(page.locator("#lint-parts")).to_have_text("1")
            expect(page.locator('.finding[data-rule="word.sensitive"]')).to_contain_text("免费")
            expect(page.locator('.finding[data-rule="unsubscribe.missing"]')).to_be_visible()
            expect(page.locator("#lint-text mark.sev-error")).to_have_text("免费")

            page.keyboard.type("，今晚21点前有效，回T退订")
            expect(page.locator("#lint-chars")).to_have_text("25")
            expect(page.locator('.finding[data-rule="unsubscribe.missing"]')).to_have_count(0)

            # one click on the sensitive word's fix rewrites the text, which lints again
            page.locator('.finding[data-rule="word.sensitive"] button.fix').click()
            expect(body).to_have_value("【鸿雁茶饮】会员日0元体验，今晚21点前有效，回T退订")
            expect(page.locator('.finding[data-rule="word.sensitive"]')).to_have_count(0)
            expect(page.locator("#lint-verdict")).to_have_text("可以提交审核")
            page.screenshot(path=str(tmp_path / "editor.png"), full_page=True)

            page.click("button[value=submit]")
            expect(page.locator("h1")).to_contain_text("审核中")

            # the reviewer approves it from the queue
            page.goto(f"{live_server}/staff/login")
            page.fill("#email", REVIEWER)
            page.fill("#password", REVIEWER_PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}/staff/review")
            item = page.locator(".review-item").first
            expect(item).to_contain_text("【鸿雁茶饮】会员日0元体验")
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            item.locator("button.approve").click()
            expect(item.locator(".outcome")).to_contain_text("已通过")
            assert not problems, problems  # no CSP refusal, no script error
        finally:
            browser.close()

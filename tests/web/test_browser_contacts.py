"""Importing contacts in headless Chromium: upload, mapping, progress bar, result, the refused
rows downloaded, the list with masked numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.api.test_number_checks_api import _paid
from tests.contacts.test_number_status import (
    FakeVendor,
    _import,
    _national,
    _numbers,
    vendor,
)
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, _require_chromium, live_server
from tests.web.test_console import PASSWORD, make_tenant

__all__ = ["live_server", "vendor"]  # the fixtures, used by name
pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


def test_upload_map_progress_result(live_server: str, runtime: Runtime, tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    make_tenant(runtime)
    rows = "".join(
        f"138{i:04d}{(i * 7919) % 10000:04d},客户{i},{'女' if i % 2 else '男'},金卡\n"
        for i in range(300)
    )
    upload = tmp_path / "会员名单.csv"
    upload.write_bytes(("手机号码,姓名,性别,等级\n" + rows + "12345,坏行,男,\n").encode("gbk"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(f"{live_server}/login?next=/console/contacts")
            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{live_server}/console/contacts")
            expect(page.locator("main")).to_contain_text("没有符合条件的记录")
            page.click("text=导入联系人")
            page.set_input_files("#file", str(upload))
            page.fill("#consent_source", "门店扫码")
            page.fill("#consent_proof", "扫码页勾选“接收会员优惠短信”")
            page.fill("#tags", "老会员")
            page.click(".import-form button[type=submit]")
            expect(page.locator("h2")).to_contain_text("字段映射与预览")
            expect(page.locator("select[name=col0]")).to_have_value("phone")
            expect(page.locator("select[name=col2]")).to_have_value("gender")
            page.select_option("select[name=col3]", "attr")
            expect(page.locator("table.mapping")).to_contain_text("客户0")
            page.screenshot(path=str(tmp_path / "mapping.png"), full_page=True)
            page.click("text=开始导入")
            expect(page.locator("#job-state")).to_have_text("已完成", timeout=20_000)
            expect(page.locator("#job-progress")).to_have_attribute("value", "100")
            expect(page.locator("[data-counter=imported]")).to_have_text("300")
            expect(page.locator("[data-counter=invalid]")).to_have_text("1")
            page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
            with page.expect_download() as info:
                page.click("#download-errors")
            saved = tmp_path / "errors.csv"
            info.value.save_as(str(saved))
            text = saved.read_text(encoding="utf-8-sig")
            assert "****45,坏行" in text and "wrong_length" in text  # the number masked
            page.click("text=查看联系人")
            table = page.locator("table.contacts-table")
            expect(table).to_contain_text("****")
            expect(table).to_contain_text("老会员")
            body = page.content()
            assert "13800000000" not in body and "客户299" not in body  # masked, 客**
            assert (tmp_path / "result.png").stat().st_size > 0
        finally:
            browser.close()


def test_a_number_check_from_the_suppression_page(
    live_server: str,
    runtime: Runtime,
    tmp_path: Path,
    vendor: FakeVendor,
) -> None:
    """空号检测 in the browser: the button on the suppression page, the progress bar polled to
    the summary, and the empty numbers then on the list."""
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    make_tenant(runtime)
    with runtime.engine.begin() as conn:
        tea = tenants.get_tenant(conn, "tea-house").id
    numbers = _numbers(40, start=500)
    _import(runtime, tea, numbers)
    vendor.codes = {_national(n): 0 for n in numbers[:3]}
    _paid(runtime, vendor, number_status_batch=10)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(f"{live_server}/login?next=/console/suppressions")
            page.fill("#email", "owner@tea.example")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("#number-checks")).to_contain_text("尚未进行过空号检测")
            page.click("#start-check")
            expect(page.locator("#check-state")).to_have_text("已完成", timeout=20_000)
            expect(page.locator("#check-progress")).to_have_attribute("value", "100")
            expect(page.locator("[data-counter=empty]")).to_have_text("3")
            expect(page.locator("[data-counter=active]")).to_have_text("37")
            page.screenshot(path=str(tmp_path / "check.png"), full_page=True)
            page.click("#see-invalid")
            table = page.locator("#records table")
            expect(table).to_contain_text("空号检测（第三方服务）")
            expect(table.locator("tbody tr")).to_have_count(3)
            expect(page.locator("#recent-checks")).to_contain_text("已完成")
            page.screenshot(path=str(tmp_path / "list.png"), full_page=True)
            assert (tmp_path / "check.png").stat().st_size > 0
        finally:
            browser.close()

"""Audiences in headless Chromium: build a segment condition by condition with the live count
following, save it, freeze it; the RFM charts and the lifecycle funnel drawn (and no CSP
violation on the way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hongyan.audience import recompute
from hongyan.clock import FixedClock
from hongyan.runtime import Runtime
from tests.web.test_audience_console import seed
from tests.web.test_browser import _require_chromium, console_page, live_server
from tests.web.test_console import make_tenant

__all__ = ["live_server"]  # the fixture, used by name
pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


def test_builder_live_count_and_charts(
    live_server: str, runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    _require_chromium()
    from playwright.sync_api import expect

    make_tenant(runtime)
    tid = seed(runtime)
    recompute.recompute(runtime.engine, clock, tid)
    problems: list[str] = []
    with console_page(live_server, "/console/audiences", problems) as page:

        def settled() -> None:
            """No htmx request in flight and the last swap processed (its new elements
            listen only once htmx has settled them)."""
            expect(page.locator(".htmx-request, .htmx-added, .htmx-settling")).to_have_count(0)
            page.wait_for_timeout(50)

        page.click("#new-segment")
        count = page.locator("#live-count")
        expect(count).to_be_visible()
        # the first condition: interest tag 果茶
        page.select_option("select[name=field0]", "interest")
        expect(page.locator("select[name=op0]")).to_have_value("has")
        settled()
        page.fill("input[name=value0]", "果茶")
        expect(count).to_have_text("20")
        # a second: orders ≥ 1 … and revenue ≥ 200 yuan
        page.click("#add-condition")
        expect(page.locator("select[name=field1]")).to_be_visible()
        settled()
        page.select_option("select[name=field1]", "revenue")
        expect(page.locator("select[name=op1] option[value=gte]")).to_have_count(1)
        settled()
        page.select_option("select[name=op1]", "gte")
        expect(page.locator("select[name=op1]")).to_have_value("gte")
        settled()
        page.fill("input[name=value1]", "200")
        expect(count).to_have_text("11")  # odd i from 19 to 39: 200 … 400 yuan
        page.check("input[name=negate1]")  # not: odd i up to 17
        expect(count).to_have_text("9")
        page.uncheck("input[name=negate1]")
        expect(count).to_have_text("11")
        page.select_option("select[name=field1]", "city")
        expect(page.locator("select[name=op1] option[value=contains]")).to_have_count(1)
        settled()
        page.select_option("select[name=op1]", "is_set")
        expect(page.locator("input[name=value1]")).to_have_count(0)
        settled()
        expect(count).to_have_text("0")
        page.click("button[value='remove:1']")
        expect(count).to_have_text("20")
        expect(page.locator(".sample-table")).to_contain_text("****")
        page.fill("#segment-name", "果茶客")
        page.screenshot(path=str(tmp_path / "builder.png"), full_page=True)
        page.click("#save-segment")
        expect(page.locator(".flash")).to_contain_text("已保存人群")
        page.click("#snapshot")
        expect(page.locator(".flash")).to_contain_text("纳入 0 人")
        expect(page.locator("table.audiences-table")).to_contain_text("20")

        page.goto(f"{live_server}/console/audiences/rfm")
        expect(page.locator("#rfm-heatmap")).to_have_attribute("data-ready", "true")
        expect(page.locator("#rfm-heatmap svg")).to_have_count(1)
        expect(page.locator("#rfm-groups svg")).to_have_count(1)
        expect(page.locator("#rfm-groups-table")).to_contain_text("重要价值客户")
        page.screenshot(path=str(tmp_path / "rfm.png"), full_page=True)
        page.goto(f"{live_server}/console/audiences/lifecycle")
        expect(page.locator("#lifecycle-funnel svg")).to_have_count(1)
        expect(page.locator("#lifecycle-funnel")).to_contain_text("潜在客户")
        page.screenshot(path=str(tmp_path / "lifecycle.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems

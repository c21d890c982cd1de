"""The console's campaign report: tables, the polling panel, exports; and in headless Chromium,
every chart drawn (and no CSP violation)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.tracking.test_report import _campaign
from tests.web.test_browser import _require_chromium, console_page, live_server
from tests.web.test_console import login, make_tenant

__all__ = ["live_server"]


def _tid(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(tenants.get_tenant(conn, "tea-house").id)


def test_report_page_tables_panel_exports(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    _campaign(client, runtime, _tid(runtime))
    login(client)
    listing = client.get("/console/reports")
    assert listing.status_code == 200 and "/console/reports/campaigns/9" in listing.text
    page = client.get("/console/reports/campaigns/9")
    assert page.status_code == 200
    html = page.text
    for table in ("variant-table", "funnel-table", "failure-table", "province-table",
                  "carrier-table", "heatmap-table"):  # fmt: skip
        assert f'id="{table}"' in html
    assert 'data-step="converted"><td>转化</td><td class="num">2</td>' in html
    assert 'hx-trigger="every 5s"' in html  # one message still pending
    assert "空号" in html
    panel = client.get(
        "/console/reports/campaigns/9",
        headers={"hx-request": "true", "hx-target": "report-panel"},
    )
    assert panel.status_code == 200 and panel.text.lstrip().startswith('<div id="report-panel"')
    assert client.get("/console/reports/campaigns/77").status_code == 404
    csv = client.get("/console/reports/campaigns/9/export.csv")
    assert csv.status_code == 200 and "invalid_number" in csv.text
    # found by the console fuzz: an id past BIGINT was a 500 on SQLite, and any extension was
    # written into the download's header (a 500 for one outside Latin-1)
    for kind in ("campaigns", "journeys", "segments"):
        assert client.get(f"/console/reports/{kind}/{2**64}").status_code == 404
        assert client.get(f"/console/reports/{kind}/{2**64}/export.csv").status_code == 404
    for ext in ("txt", "%C4%80", 'csv"; x=y', "CSV"):
        assert client.get(f"/console/reports/campaigns/9/export.{ext}").status_code == 404, ext


@pytest.mark.browser
@pytest.mark.sqlite_only
def test_report_charts_render(live_server: str, runtime: Runtime) -> None:
    _require_chromium()
    from playwright.sync_api import expect

    make_tenant(runtime)
    with httpx.Client(base_url=live_server) as http:
        _campaign(http, runtime, _tid(runtime))
    problems: list[str] = []
    with console_page(live_server, "/console/reports/campaigns/9", problems) as page:
        for chart in ("funnel", "failures", "provinces", "heatmap", "variants"):
            node = page.locator(f"[data-chart-id={chart}]")
            expect(node).to_have_attribute("data-ready", "true")
            expect(node.locator("svg")).to_have_count(1)
        # the panel refreshes itself (every 5 s while a message is pending): still drawn
        with page.expect_response(lambda r: "/console/reports/campaigns/9" in r.url):
            pass
        page.wait_for_timeout(300)
        funnel = page.locator("[data-chart-id=funnel]")
        expect(funnel).to_have_attribute("data-ready", "true")
        expect(funnel.locator("svg")).to_have_count(1)
    assert not problems, problems

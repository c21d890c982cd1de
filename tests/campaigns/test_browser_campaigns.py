"""The campaign wizard in headless Chromium: audience → copy (with its lint) → schedule →
review with counts and cost → launch, then the live status panel polling (no CSP violation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hongyan.runtime import Runtime
from tests.campaigns.support import launched_ab_test, make_shop
from tests.campaigns.test_console import _user
from tests.web.test_browser import _require_chromium, console_page, live_server

__all__ = ["live_server"]  # the fixture, used by name
pytestmark = [pytest.mark.browser, pytest.mark.sqlite_only]


def test_wizard_to_launch(live_server: str, runtime: Runtime, tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import expect

    shop = make_shop(runtime)
    _user(runtime, shop)
    problems: list[str] = []
    with console_page(live_server, "/console/campaigns", problems) as page:
        page.click("#new-campaign")
        # 1 audience
        page.fill("input[name=name]", "双十一预热")
        page.select_option("select[name=segment]", label="全部")
        # 2 copy: the templates with their lint (count and parts)
        copy = page.locator(".copy-choice").filter(has_text="会员日第二杯半价")
        expect(copy).to_contain_text("1 条计费")
        copy.locator("input[type=checkbox]").check()
        page.locator(".copy-choice").filter(has_text="满50减15").locator("input").check()
        # 3 schedule: the e-commerce evening window
        page.select_option("select[name=window]", "ecommerce_evening")
        page.screenshot(path=str(tmp_path / "wizard.png"), full_page=True)
        page.click("#to-review")
        # 4 review: counts and cost
        expect(page.locator("#est-recipients")).to_have_text("38")
        expect(page.locator("dd[data-reason=suppressed]")).to_have_text("1")
        expect(page.locator("dd[data-reason=no_consent]")).to_have_text("1")
        expect(page.locator("#est-cost")).to_have_text("¥1.90")
        page.click("#do-launch")
        # launched in the background: the panel polls until it is running
        expect(page.locator("#campaign-state")).to_have_text("发送中", timeout=15000)
        expect(page.locator("#count-planned")).to_have_text("38")
        expect(page.locator("#funnel tr[data-variant=A]")).to_be_visible()
        # the panel polls: a pause from elsewhere shows without a reload
        page.wait_for_timeout(300)
        from hongyan.campaigns import service

        with runtime.engine.begin() as conn:
            camp = service.get(conn, shop.tenant_id, "双十一预热")
            service.pause(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")
        expect(page.locator("#campaign-state")).to_have_text("已暂停", timeout=8000)
        page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems


def test_wizard_link_target_and_coupon_pool(
    live_server: str, runtime: Runtime, tmp_path: Path
) -> None:
    """The copy step shows where {link} leads and the coupon pool once a chosen template places
    them (CSS alone: the page allows no inline script); a refusal comes back on the form beside
    the field; given, the review shows them."""
    _require_chromium()
    from playwright.sync_api import expect

    from hongyan.tracking import coupons
    from tests.campaigns.test_journey_links import LINK_AND_COUPON, TARGET
    from tests.content.support import approved_version

    shop = make_shop(runtime, 6, opted_out=0, without_consent=0)
    approved_version(runtime, shop.tenant_id, LINK_AND_COUPON)
    with runtime.engine.begin() as conn:
        coupons.create_pool(conn, shop.tenant_id, runtime.clock.now(), name="会员券")
    _user(runtime, shop)
    problems: list[str] = []
    with console_page(live_server, "/console/campaigns/new", problems) as page:
        link, pool = page.locator("#link-url"), page.locator("#coupon-pool")
        page.fill("input[name=name]", "购物车券")
        page.select_option("select[name=segment]", label="全部")
        plain = page.locator(".copy-choice").filter(has_text="会员日第二杯半价")
        tracked = page.locator(".copy-choice").filter(has_text="专属券")
        expect(tracked).to_contain_text("coupon")  # it says what it needs
        expect(link).to_be_hidden()
        expect(pool).to_be_hidden()
        plain.locator("input[type=checkbox]").check()
        expect(link).to_be_hidden()  # a template without {link} / {coupon}: nothing to ask
        tracked.locator("input[type=checkbox]").check()
        expect(link).to_be_visible()
        expect(pool).to_be_visible()
        pool.select_option(label="会员券 (自动生成)")
        page.screenshot(path=str(tmp_path / "wizard-links.png"), full_page=True)
        page.click("#to-review")  # no link target: refused on the form
        expect(page.locator("#wizard-problem")).to_contain_text("模板含 {link}，请填写链接目标地址")
        expect(page.locator("#link-url-error")).to_be_visible()
        expect(page.locator("#link-url")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("input[name=name]")).to_have_value("购物车券")  # kept
        expect(page.locator("#coupon-pool")).to_be_visible()
        page.screenshot(path=str(tmp_path / "wizard-refused.png"), full_page=True)
        page.fill("#link-url", TARGET)
        page.click("#to-review")
        # the variants follow the page's order of the templates: the tracked one is A
        expect(page.locator("[data-variant-link=A]")).to_contain_text(TARGET)
        expect(page.locator("[data-variant-pool=A]")).to_be_visible()
        expect(page.locator("[data-variant-link=B]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "review-links.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems


def test_deciding_an_ab_test(live_server: str, runtime: Runtime, tmp_path: Path) -> None:
    """The marketer picks the winner: the page comes back at once and polls while the rest is
    planned in the background, then shows the rest's counts and the winner."""
    _require_chromium()
    from playwright.sync_api import expect

    shop = make_shop(runtime)
    _user(runtime, shop)
    with runtime.engine.begin() as conn:
        camp = launched_ab_test(runtime, shop, conn)
    problems: list[str] = []
    with console_page(live_server, f"/console/campaigns/{camp['id']}", problems) as page:
        expect(page.locator("#count-planned")).to_have_text("16")
        page.select_option("select[name=winner]", "B")
        page.click("#do-decide")
        expect(page.locator("#campaign-state")).to_have_text("发送中", timeout=15000)
        expect(page.locator("#count-planned")).to_have_text("22", timeout=15000)
        expect(page.locator("#ab-winner")).to_have_text("B")
        expect(page.locator("#do-decide")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "decided.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems


def test_a_failed_decision_shows_its_error(
    live_server: str, runtime: Runtime, tmp_path: Path
) -> None:
    """Everybody left has refused marketing: the rest cannot be sent, and the polling page shows
    the test waiting again with the error and the decision form."""
    _require_chromium()
    import sqlalchemy as sa
    from playwright.sync_api import expect

    from hongyan.campaigns import caps
    from hongyan.db.scope import unscoped
    from hongyan.db.tables import contacts

    shop = make_shop(runtime)
    _user(runtime, shop)
    with runtime.engine.begin() as conn:
        camp = launched_ab_test(runtime, shop, conn)
        ids = conn.execute(unscoped(sa.select(contacts.c.id), "test")).scalars().all()
        for cid in ids:
            caps.set_preference(conn, runtime.clock, shop.tenant_id, int(cid), "none", "page")
    problems: list[str] = []
    with console_page(live_server, f"/console/campaigns/{camp['id']}", problems) as page:
        page.select_option("select[name=winner]", "A")
        page.click("#do-decide")
        expect(page.locator("#decide-error")).to_contain_text("以版本 A 发送其余受众失败")
        expect(page.locator("#campaign-state")).to_have_text("发送中")
        expect(page.locator("#do-decide")).to_be_visible()
        expect(page.locator("#count-planned")).to_have_text("16")
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems

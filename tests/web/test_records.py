"""Console pages for send records, a message's timeline, the inbox and the suppression list."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from hongyan.clock import FixedClock
from hongyan.dispatch.states import Reason, State
from hongyan.reports import messages as reports
from hongyan.runtime import Runtime
from hongyan.tenants import service
from hongyan.web.i18n import LANGS, MESSAGES
from tests.reports.seeding import LONG_TEXT, NUMBERS, OTHER_NUMBER, Seed, seed
from tests.web.test_console import PASSWORD, login, make_tenant

HTMX = {"HX-Request": "true", "HX-Target": "records"}


@pytest.fixture
def seeded(client: TestClient, runtime: Runtime, clock: FixedClock) -> Seed:
    make_tenant(runtime)  # 鸿雁茶饮, owner@tea.example
    with runtime.engine.begin() as conn:
        tea = service.get_tenant(conn, "tea-house").id
    s = seed(runtime, clock, a=tea)
    assert login(client).status_code == 303
    return s


def no_full_number(html: str) -> None:
    """No recipient's number appears in clear, in E.164 or national form, with or without
    spaces (the masked form keeps at most seven of its digits)."""
    flat = re.sub(r"[\s\-]", "", html)
    for number in [*NUMBERS.values(), OTHER_NUMBER]:
        assert number not in flat and number[3:] not in flat, number


def rows(html: str) -> str:
    """The table body of a list page (the filter chips name every state)."""
    match = re.search(r"<tbody>(.*?)</tbody>", html, re.S)
    return match.group(1) if match else ""


def test_send_records_page(client: TestClient, seeded: Seed) -> None:
    page = client.get("/console/messages")
    assert page.status_code == 200
    html = page.text
    assert "<h1>发送记录</h1>" in html
    assert 'href="/console/inbox"' in html and 'href="/console/suppressions"' in html
    assert 'aria-current="page"' in html
    body = rows(html)
    for masked in ("138****5678", "139****0001", "137****5678", "150****4321", "136****7777"):
        assert masked in body
    assert body.count("<tr>") == 8
    for label in ("已送达", "未送达", "发送失败", "已过期", "待发送", "发送中", "已提交", "空号"):
        assert label in body, label
    assert "江南面馆" not in html
    assert "共 8 条" in html
    no_full_number(html)
    # The counts by state sit on the filter chips.
    assert re.search(r'value="planned">.*?<span class="count">2</span>', html, re.S)
    # Every row links to its message.
    for mid in seeded.ids.values():
        assert f'href="/console/messages/{mid}"' in body
    assert f'href="/console/messages/{seeded.other_id}"' not in html


def test_filters_narrow_the_table(client: TestClient, seeded: Seed) -> None:
    delivered = rows(client.get("/console/messages?state=delivered").text)
    assert delivered.count("<tr>") == 1 and "138****5678" in delivered

    several = client.get("/console/messages", params={"state": ["undelivered", "failed"]}).text
    assert rows(several).count("<tr>") == 2
    assert re.search(r'value="failed" checked', several)

    digits = client.get("/console/messages?number=5678")
    body = rows(digits.text)
    assert body.count("<tr>") == 2 and "137****5678" in body and "138****5678" in body
    assert 'value="5678"' in digits.text  # the form keeps what was typed

    for full in ("13812345678", "+8613812345678", "138****5678"):
        body = rows(client.get("/console/messages", params={"number": full}).text)
        assert body.count("<tr>") == 1 and "138****5678" in body, full

    day2 = rows(client.get("/console/messages?since=2026-11-11").text)
    assert day2.count("<tr>") == 2 and "150****4321" in day2

    marketing = rows(client.get("/console/messages?category=marketing&source=campaign").text)
    assert marketing.count("<tr>") == 1 and "150****4321" in marketing

    nothing = client.get("/console/messages?number=4444")
    assert nothing.status_code == 200 and "没有符合条件的记录" in nothing.text


def test_htmx_swaps_only_the_panel(client: TestClient, seeded: Seed) -> None:
    part = client.get("/console/messages?number=0001", headers=HTMX)
    assert part.status_code == 200
    assert "<html" not in part.text and part.text.lstrip().startswith('<div id="records"')
    assert rows(part.text).count("<tr>") == 1
    assert part.headers["content-security-policy"].startswith("default-src 'self'")
    # A history restore asks for the whole page.
    full = client.get(
        "/console/messages?number=0001", headers={**HTMX, "HX-History-Restore-Request": "true"}
    )
    assert "<html" in full.text


@pytest.mark.parametrize(
    ("query", "zh", "en"),
    [
        ("since=2026-13-45", "无法识别的时间", "Cannot read the time"),
        ("until=yesterday", "无法识别的时间", "Cannot read the time"),
        ("number=abc", "号码筛选只能填写号码末尾 1–4 位数字", "Enter the last 1-4 digits"),
        ("number=138a", "号码筛选只能填写号码末尾 1–4 位数字", "Enter the last 1-4 digits"),
        ("number=123456", "号码筛选只能填写号码末尾 1–4 位数字", "Enter the last 1-4 digits"),
        ("state=lost", "不是有效的状态", "is not a valid state"),
        ("category=spam", "不是有效的类别", "is not a valid category"),
        ("since=2026-11-12&until=2026-11-11", "结束时间必须晚于开始时间", "The end must be"),
        ("page=x", "页码须为正整数", "The page number must be"),
        ("page=99999999999999999999", "页码须为正整数", "The page number must be"),
    ],
)
def test_bad_filter_input_is_explained(
    client: TestClient, seeded: Seed, query: str, zh: str, en: str
) -> None:
    page = client.get(f"/console/messages?{query}")
    assert page.status_code == 422
    assert zh in page.text and "筛选条件有误" in page.text
    if not query.startswith(("page=", "state=")):
        assert 'aria-invalid="true"' in page.text
    assert "<tbody>" not in page.text  # no half-filtered table
    swap = client.get(f"/console/messages?{query}", headers=HTMX)
    assert swap.status_code == 200 and zh in swap.text  # htmx swaps only 2xx answers
    client.get("/lang/en")
    english = client.get(f"/console/messages?{query}")
    assert english.status_code == 422 and en in english.text
    client.get("/lang/zh-CN")


def test_a_message_with_its_timeline(client: TestClient, seeded: Seed) -> None:
    mid = seeded.ids["delivered"]
    page = client.get(f"/console/messages/{mid}")
    assert page.status_code == 200
    html = page.text
    assert f"短信 #{mid}" in html and "138****5678" in html
    assert LONG_TEXT in html
    assert "时间线" in html and "分段与回执" in html
    for carrier_id in (f"{mid:04x}01", f"{mid:04x}02"):
        assert carrier_id in html
    assert "stat=DELIVRD" in html and "好的，谢谢" in html and "最终状态" in html
    assert "2026-11-10 11:00:00" in html  # created, in Shanghai time
    order = [html.index(k) for k in ("创建", "已提交运营商", "收到回执", "最终状态", "收到回复")]
    assert order == sorted(order)
    no_full_number(html)

    retry = client.get(f"/console/messages/{seeded.ids['retry']}").text
    assert "等待重试" in retry and "限流" in retry and "0x00000058" in retry
    assert "尚未提交给运营商" in retry
    invalid = client.get(f"/console/messages/{seeded.ids['invalid']}").text
    assert "空号" in invalid and "err=001" in invalid

    client.get("/lang/en")
    english = client.get(f"/console/messages/{mid}").text
    assert "Timeline" in english and "Delivered" in english and "Carrier id" in english


@pytest.mark.parametrize("which", ["other", "0", "abc", "1e3", "99999999999999999999999", "-1"])
def test_foreign_or_malformed_message_ids_are_404(
    client: TestClient, seeded: Seed, which: str
) -> None:
    target = str(seeded.other_id) if which == "other" else which
    page = client.get(f"/console/messages/{target}")
    assert page.status_code == 404
    assert "找不到该短信" in page.text or "找不到" in page.text
    assert "江南面馆" not in page.text and "面已出锅" not in page.text


def test_inbox_page(client: TestClient, seeded: Seed) -> None:
    page = client.get("/console/inbox")
    assert page.status_code == 200
    body = rows(page.text)
    assert body.count("<tr>") == 2
    assert "好的，谢谢" in body and "退订" in body and "面很好吃" not in page.text
    assert f'href="/console/messages/{seeded.ids["delivered"]}"' in body
    assert body.index("退订") < body.index("好的，谢谢")  # newest first
    no_full_number(page.text)
    opt_outs = rows(client.get("/console/inbox?kind=opt_out").text)
    assert opt_outs.count("<tr>") == 1 and "137****5678" in opt_outs
    exact = rows(client.get("/console/inbox?number=%2B8613812345678").text)
    assert exact.count("<tr>") == 1 and "138****5678" in exact
    bad = client.get("/console/inbox?kind=spam&number=x1")
    assert bad.status_code == 422 and "不是有效的类型" in bad.text and "号码筛选" in bad.text


def test_suppressions_page(client: TestClient, seeded: Seed) -> None:
    page = client.get("/console/suppressions")
    assert page.status_code == 200
    body = rows(page.text)
    assert body.count("<tr>") == 2
    assert "137****5678" in body and "139****0001" in body
    assert "空号" in body and "退订" in body and "永久" in body and "全部短信" in body
    assert "手动屏蔽" not in body  # the other tenant's entry
    no_full_number(page.text)
    invalid = rows(client.get("/console/suppressions?reason=invalid").text)
    assert invalid.count("<tr>") == 1 and "139****0001" in invalid
    assert client.get("/console/suppressions?reason=whim").status_code == 422


def test_paging_through_the_records(
    client: TestClient, runtime: Runtime, seeded: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hongyan.web import records

    monkeypatch.setattr(records, "PAGE_SIZE", 3)
    first = client.get("/console/messages").text
    assert "第 1 / 3 页" in first and rows(first).count("<tr>") == 3
    assert 'rel="next"' in first and 'rel="prev"' not in first
    link = re.search(r'rel="next" href="([^"]+)"', first)
    assert link
    second = client.get(link.group(1).replace("&amp;", "&")).text
    assert "第 2 / 3 页" in second and 'rel="prev"' in second
    last = client.get("/console/messages?page=3&number=").text
    assert rows(last).count("<tr>") == 2 and 'rel="next"' not in last
    seen = set(re.findall(r"/console/messages/(\d+)", rows(first) + rows(second) + rows(last)))
    assert seen == {str(m) for m in seeded.ids.values()}
    # Filters ride along on the pager's links.
    wanted = ["planned", "sending", "delivered", "undelivered"]
    filtered = client.get("/console/messages", params={"state": wanted, "number": ""}).text
    assert "共 5 条" in filtered and "第 1 / 2 页" in filtered
    link = re.search(r'rel="next" href="([^"]+)"', filtered)
    assert link and link.group(1).replace("&amp;", "&") == (
        "/console/messages?state=planned&state=sending&state=delivered&state=undelivered&page=2"
    )


def test_roles_and_login(client: TestClient, runtime: Runtime, seeded: Seed) -> None:
    with runtime.engine.begin() as conn:
        service.create_user(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id=seeded.tenant,
            email="audit@tea.example",
            name="审计",
            role="auditor",
            password=PASSWORD,
        )
    client.cookies.clear()
    assert client.get("/console/messages", follow_redirects=False).status_code == 303
    assert login(client, email="audit@tea.example").status_code == 303
    for path in ("/console/messages", "/console/inbox", "/console/suppressions"):
        assert client.get(path).status_code == 403, path
    assert client.get(f"/console/messages/{seeded.ids['delivered']}").status_code == 403


def test_english_pages(client: TestClient, seeded: Seed) -> None:
    client.get("/lang/en")
    html = client.get("/console/messages").text
    assert '<html lang="en">' in html and "Send records" in html and "Delivered" in html
    assert "Replies" in html and "Suppressions" in html
    assert "Replies and opt-outs" in client.get("/console/inbox").text
    assert "Suppression list" in client.get("/console/suppressions").text
    for path in ("/console/messages", "/console/inbox", "/console/suppressions"):
        text = client.get(path).text
        assert "http://" not in text and "https://" not in text


def test_every_label_the_pages_can_show_is_translated() -> None:
    groups = {
        "state": [s.value for s in State],
        "reason": [r.value for r in Reason],
        "category": list(reports.CATEGORIES),
        "source": list(reports.SOURCES),
        "kind": list(reports.INBOX_KINDS),
        "supp_reason": list(reports.SUPPRESSION_REASONS),
        "supp_scope": ["marketing", "all"],
        "supp_source": ["reply", "receipt", "import", "console", "api"],
        "encoding": ["gsm7", "ucs2"],
        "carrier": ["cmcc", "cucc", "ctcc", "cbn", "intl"],
    }
    for prefix, values in groups.items():
        for value in values:
            entry = MESSAGES[f"{prefix}.{value}"]
            assert all(entry.get(lang) for lang in LANGS), f"{prefix}.{value}"

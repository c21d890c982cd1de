"""The campaign console: the wizard, the review with counts and cost, launch, the live status
panel, pause; Chinese by default, English on request; tenants kept apart."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.db.scope import unscoped
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.campaigns.support import Shop, launched_ab_test, make_shop
from tests.web.test_console import PASSWORD, csrf_field, login


def _user(runtime: Runtime, shop: Shop, email: str = "owner@tea.example") -> None:
    with runtime.engine.begin() as conn:
        tenants.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=shop.tenant_id, email=email,
            name="王小明", role="owner", password=PASSWORD,
        )  # fmt: skip


def _settled(client: TestClient, url: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        page = client.get(url)
        if 'id="campaign-state">启动中<' not in page.text or time.monotonic() > deadline:
            return page
        assert 'id="launch-progress"' in page.text and 'hx-trigger="every 2s"' in page.text
        time.sleep(0.1)


def test_launching_page_and_a_failed_launch(client: TestClient, runtime: Runtime) -> None:
    """A campaign marked ``launching`` shows it (live) even when another process runs it; a
    launch that fails comes back as a draft with the error on the page."""
    from hongyan.campaigns import launching
    from hongyan.campaigns import service as campaigns
    from hongyan.contacts import suppression

    shop, camp = _launching(client, runtime)
    url = f"/console/campaigns/{camp['id']}"
    # While a launch holds the writer (SQLite has one), the page and the list still answer
    with runtime.engine.begin() as launch:
        table = campaigns.campaigns
        launch.execute(
            unscoped(
                sa.update(table)
                .where(table.c.id == camp["id"])
                .values(updated_at=table.c.updated_at),
                "a stand-in for a launch's writes",
            )
        )
        started = time.monotonic()
        page = client.get(url)
        assert client.get("/console/campaigns").status_code == 200
        assert time.monotonic() - started < 5  # not after SQLite's 10 s busy timeout
    assert 'id="campaign-state">启动中<' in page.text and "正在后台启动" in page.text
    assert 'hx-trigger="every 2s"' in page.text and 'id="do-launch"' not in page.text
    with runtime.engine.begin() as conn:
        suppression.add(
            conn,
            runtime.clock,
            runtime.keyring,
            [
                suppression.NewSuppression(shop.tenant_id, p, "opt_out", "reply")
                for p in shop.phones
            ],
        )
    launching.run(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
    )
    page = client.get(url)
    assert 'id="campaign-state">草稿<' in page.text and 'id="launch-error"' in page.text
    assert "上次启动失败" in page.text and "没有可发送的联系人" in page.text


def _launching(client: TestClient, runtime: Runtime) -> tuple[Any, dict[str, Any]]:
    """A logged-in shop owner and a campaign marked launching (its launch not yet run)."""
    from hongyan.campaigns import service as campaigns

    shop = make_shop(runtime, 3, opted_out=0, without_consent=0)
    _user(runtime, shop)
    login(client)
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, name="c",
            segment=shop.segment_id, variants=[{"template_version_id": shop.versions[0]}],
            actor="t",
        )  # fmt: skip
        campaigns.begin_launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
    return shop, camp


def test_wizard_review_launch_and_status(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime)
    _user(runtime, shop)
    login(client)
    page = client.get("/console/campaigns")
    assert page.status_code == 200 and "还没有营销活动" in page.text
    wizard = client.get("/console/campaigns/new")
    assert "选择人群" in wizard.text and "全部" in wizard.text
    assert "会员日第二杯半价" in wizard.text  # the copy's preview, with its count
    token = csrf_field(wizard.text)
    with runtime.engine.connect() as conn:
        from hongyan.campaigns.service import copy_choices

        choices = copy_choices(conn, shop.tenant_id)
    first = next(c for c in choices if c["version_id"] == shop.versions[0])
    bad = client.post(
        "/console/campaigns/new",
        data={"csrf_token": token, "name": "会员日", "segment": str(shop.segment_id),
              "template": str(first["template_id"]), "when": "at", "at": "2020-01-01T10:00"},
    )  # fmt: skip
    assert bad.status_code == 422 and "已经过去" in bad.text
    assert 'value="会员日"' in bad.text  # the form comes back as it was
    made = client.post(
        "/console/campaigns/new",
        data={"csrf_token": token, "name": "会员日", "segment": str(shop.segment_id),
              "template": str(first["template_id"]), "when": "now", "window": "",
              "on_window_end": "carry"},
        follow_redirects=False,
    )  # fmt: skip
    assert made.status_code == 303, made.text
    url = made.headers["location"]
    review = client.get(url)
    assert 'id="est-recipients">38<' in review.text
    assert 'data-reason="suppressed">1<' in review.text
    assert "¥1.90" in review.text and "启动" in review.text
    launched = client.post(f"{url}/launch", data={"csrf_token": token}, follow_redirects=False)
    assert launched.status_code == 303
    # the launch runs in the background: the page says so (and polls) until it is done
    status = _settled(client, url)
    assert 'id="count-planned">38<' in status.text
    assert 'hx-trigger="every 2s"' in status.text  # live while messages wait
    panel = client.get(url, headers={"hx-request": "true", "hx-target": "records"})
    assert panel.text.lstrip().startswith('<div id="records"')
    client.post(f"{url}/pause", data={"csrf_token": token})
    assert "已暂停" in client.get(url).text
    client.get("/lang/en", headers={"referer": "http://testserver/console"})
    assert "Paused" in client.get(url).text
    # another tenant's user sees nothing of it
    other = make_shop(runtime, 3, slug="other", opted_out=0, without_consent=0)
    _user(runtime, other, "boss@other.example")
    client.post("/logout", data={"csrf_token": token})
    login(client, "boss@other.example")
    assert client.get(url).status_code == 404


def test_the_page_shows_a_launch_in_progress(client: TestClient, runtime: Runtime) -> None:
    """A launch waiting for the tenant's cap lock (another launch holds it) shows its stage on
    the live page; once it gets the lock it runs, and the page shows the campaign running."""
    from hongyan.campaigns import caps, launching

    shop, camp = _launching(client, runtime)
    url = f"/console/campaigns/{camp['id']}"
    with runtime.engine.begin() as other:
        caps.lock_tenant(other, shop.tenant_id)
        thread = launching.start(
            runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
        deadline = time.monotonic() + 5
        while launching.progress(shop.tenant_id, camp["id"]) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        page = client.get(url)
        assert 'id="launch-progress"' in page.text and "正在生成受众快照" in page.text
    thread.join(30)
    page = client.get(url)
    assert 'id="campaign-state">发送中<' in page.text and 'id="count-planned">3<' in page.text


def _ab_campaign(client: TestClient, runtime: Runtime) -> tuple[Shop, dict[str, Any]]:
    """A logged-in shop owner and an A/B campaign in its test phase (16 sent, 22 waiting)."""

    shop = make_shop(runtime)
    _user(runtime, shop)
    login(client)
    with runtime.engine.begin() as conn:
        camp = launched_ab_test(runtime, shop, conn)
    return shop, camp


def test_deciding_from_the_console_runs_in_the_background(
    client: TestClient, runtime: Runtime
) -> None:
    _shop, camp = _ab_campaign(client, runtime)
    url = f"/console/campaigns/{camp['id']}"
    page = client.get(url)
    assert 'id="do-decide"' in page.text
    token = csrf_field(page.text)
    # by the test: no receipts yet, so no winner; said so, nothing started
    page = client.post(f"{url}/decide", data={"csrf_token": token, "winner": ""})  # redirected
    assert "检验尚未得出胜出版本" in page.text and 'id="campaign-state">发送中<' in page.text
    chosen = client.post(
        f"{url}/decide", data={"csrf_token": token, "winner": "B"}, follow_redirects=False
    )
    assert chosen.status_code == 303 and chosen.headers["location"] == url
    deadline = time.monotonic() + 30
    while True:
        page = client.get(url)
        if 'id="campaign-state">生成剩余短信中<' not in page.text or time.monotonic() > deadline:
            break
        assert 'id="launch-progress"' in page.text and 'hx-trigger="every 2s"' in page.text
        time.sleep(0.1)
    assert 'id="campaign-state">发送中<' in page.text and 'id="count-planned">22<' in page.text
    assert 'id="ab-winner">B<' in page.text and 'id="do-decide"' not in page.text


def test_the_page_shows_a_decision_in_progress_and_its_failure(
    client: TestClient, runtime: Runtime
) -> None:
    from hongyan.campaigns import caps, launching
    from hongyan.campaigns import service as campaigns
    from hongyan.db.tables import contacts

    shop, camp = _ab_campaign(client, runtime)
    url = f"/console/campaigns/{camp['id']}"
    with runtime.engine.begin() as conn:
        campaigns.begin_decide(
            conn, runtime.clock, shop.tenant_id, camp["id"], winner="B", actor="t"
        )
    page = client.get(url)  # marked; nobody runs it in this process yet
    assert 'id="campaign-state">生成剩余短信中<' in page.text and "正在后台生成" in page.text
    assert 'id="do-pause"' not in page.text and 'id="do-cancel"' in page.text
    assert 'id="do-decide"' not in page.text
    with runtime.engine.begin() as conn:  # everybody asks for no more marketing
        ids = list(
            conn.execute(
                unscoped(
                    sa.select(contacts.c.id).where(contacts.c.tenant_id == shop.tenant_id), "t"
                )
            ).scalars()
        )
        for cid in ids:
            caps.set_preference(conn, runtime.clock, shop.tenant_id, int(cid), "none", "page")
    with runtime.engine.begin() as other:  # another launch holds the tenant's cap lock
        caps.lock_tenant(other, shop.tenant_id)
        thread = launching.start(
            runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"],
            actor="t", kind="decide",
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while launching.progress(shop.tenant_id, camp["id"]) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        page = client.get(url)
        assert 'id="launch-progress"' in page.text and "正在核对其余受众的频次上限" in page.text
    thread.join(30)
    page = client.get(url)
    assert 'id="campaign-state">发送中<' in page.text and 'id="decide-error"' in page.text
    assert "以版本 B 发送其余受众失败" in page.text and "没有可发送的联系人" in page.text
    assert 'id="do-decide"' in page.text  # waiting for a decision again
    client.get("/lang/en", headers={"referer": "http://testserver/console"})
    assert "Sending the rest variant B failed" in client.get(url).text

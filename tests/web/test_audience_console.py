"""The audiences console without JavaScript: builder actions, saving, errors, snapshot, RFM and
lifecycle pages with their tables, roles."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient

from hongyan.contacts import events
from hongyan.runtime import Runtime
from hongyan.tenants import service
from tests.web.test_console import PASSWORD, csrf_field, login, make_tenant


def seed(runtime: Runtime, slug: str = "tea-house", n: int = 40) -> int:
    """``n`` buyers (amounts 10, 20, … yuan, one every 5 days back) and two browsers."""
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        tid = service.get_tenant(conn, slug).id
        evs = [
            events.Event(f"o{i}", "order", f"+86138{i:08d}", now - timedelta(days=5 * i),
                         amount_fen=1000 * (i + 1), tags=("果茶",) if i % 2 else ("咖啡",))
            for i in range(n)
        ] + [
            events.Event(f"b{i}", "browse", f"+86139{i:08d}", now - timedelta(days=2),
                         tags=("甜品",))
            for i in range(2)
        ]  # fmt: skip
        events.ingest(conn, runtime.clock, runtime.keyring, tid, evs)
    return int(tid)


def _form(page: str, **fields: str) -> dict[str, str]:
    data = {"csrf_token": csrf_field(page)}
    data.update(fields)
    return data


def test_builder_save_snapshot(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    seed(runtime)
    login(client)
    page = client.get("/console/audiences")
    assert page.status_code == 200 and "还没有保存的人群" in page.text
    new = client.get("/console/audiences/new")
    assert new.status_code == 200 and 'name="field0"' in new.text
    assert 'id="live-count">' in new.text  # the default row: lifecycle is active
    # add a row, choose a field and operator, see the count
    added = client.post(
        "/console/audiences/builder",
        data=_form(new.text, rows="1", match="all", field0="lifecycle", op0="eq", value0="active",
                   action="add"),
    )  # fmt: skip
    assert added.status_code == 200 and 'name="field1"' in added.text
    body = _form(
        added.text, rows="2", match="all", name="果茶老客", field0="interest", op0="has",
        value0="果茶", field1="orders_count", op1="gte", value1="1", action="refresh",
    )  # fmt: skip
    refreshed = client.post("/console/audiences/builder", data=body)
    assert 'id="live-count">20<' in refreshed.text
    assert "138****" in refreshed.text and "13800000001" not in refreshed.text
    wrong = client.post("/console/audiences/preview", data={**body, "value1": "many"})
    assert 'id="rule-problem"' in wrong.text and "rule.all[1].value" in wrong.text
    saved = client.post("/console/audiences/save", data=body, follow_redirects=False)
    assert saved.status_code == 303
    seg_url = saved.headers["location"]
    seg_page = client.get(seg_url)
    assert "已保存人群" in seg_page.text and 'value="果茶老客"' in seg_page.text
    dup = client.post("/console/audiences/save", data=body)
    assert dup.status_code == 422 and "已有名为" in dup.text
    # JSON mode round trip
    as_json = client.post("/console/audiences/builder", data={**body, "action": "to_json"})
    assert "rule_json" in as_json.text and "&#34;interest&#34;" in as_json.text
    # freeze it
    sid = seg_url.rsplit("/", 1)[1]
    snap = client.post(
        f"/console/audiences/segments/{sid}/snapshot",
        data=_form(seg_page.text, purpose="marketing", campaign_ref="双11"),
        follow_redirects=False,
    )
    assert snap.status_code == 303
    listing = client.get("/console/audiences")
    assert "已冻结受众" in listing.text and "未授权" in listing.text
    assert re.search(r"<td>双11</td>", listing.text)
    csv = client.get(f"/console/audiences/segments/{sid}/export.csv")
    assert csv.status_code == 200 and csv.text.count("\n") == 21


def test_rfm_and_lifecycle_pages(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    seed(runtime)
    login(client)
    rfm = client.get("/console/audiences/rfm")
    assert rfm.status_code == 200 and "尚未计算" in rfm.text
    done = client.post("/console/audiences/recompute", data=_form(rfm.text), follow_redirects=False)
    assert done.status_code == 303
    rfm = client.get("/console/audiences/rfm")
    assert "已重新计算" in rfm.text and "购买客户 40 位" in rfm.text
    assert (
        'id="rfm-heatmap"' in rfm.text
        and '<script type="application/json" id="chart-data">' in rfm.text
    )
    cells = re.findall(r'data-r="(\d)" data-f="(\d)">(\d+)<br>', rfm.text)
    assert len(cells) == 25 and sum(int(n) for _r, _f, n in cells) == 40
    assert "重要价值客户" in rfm.text
    life = client.get("/console/audiences/lifecycle")
    assert life.status_code == 200 and 'id="lifecycle-funnel"' in life.text
    stages = dict(re.findall(r'data-stage="(\w+)"><td>[^<]+</td><td class="num">(\d+)<', life.text))
    assert sum(map(int, stages.values())) == 42 and stages["potential"] == "2"
    saved = client.post(
        "/console/audiences/settings",
        data=_form(life.text, new_days="7", active_days="10", dormant_days="60", lost_days="120",
                   back="/console/audiences/lifecycle"),
        follow_redirects=False,
    )  # fmt: skip
    assert saved.headers["location"] == "/console/audiences/lifecycle"
    life = client.get("/console/audiences/lifecycle")
    assert 'name="active_days" min="1" max="3650" value="10"' in life.text
    bad = client.post(
        "/console/audiences/settings",
        data=_form(life.text, active_days="100", dormant_days="60", lost_days="120"),
    )
    assert bad.status_code == 422


def test_analyst_reads_but_cannot_change(client: TestClient, runtime: Runtime) -> None:
    make_tenant(runtime)
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, "tea-house")
        service.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=t.id, email="ana@tea.example",
            name="分析", role="analyst", password=PASSWORD,
        )  # fmt: skip
    login(client, email="ana@tea.example")
    new = client.get("/console/audiences/new")
    assert new.status_code == 200 and 'id="save-segment"' not in new.text
    denied = client.post("/console/audiences/save", data=_form(new.text, rows="0", name="x"))
    assert denied.status_code == 403
    assert client.get("/console/audiences/rfm").status_code == 200

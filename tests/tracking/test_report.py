"""The campaign report: funnel, failures, places, clicks by hour, cost and ROI, exports."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.db.tables import channels
from hongyan.reports.campaigns import CampaignNotFound, campaign_report
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth
from tests.tracking.support import contacts_for, issue_for, order, plan_messages

PHONES = ["+8613800000001", "+8613900000002", "+8618600000003", "+8613300000004"]
PERSON = "Mozilla/5.0 (iPhone) Mobile MicroMessenger/8.0"


def _channel(runtime: Runtime, name: str, price: str) -> None:
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.insert(channels).values(
                name=name,
                kind="smpp",
                config={},
                price_per_part=Decimal(price),
                created_at=now,
                updated_at=now,
            )
        )


def _campaign(client: Any, runtime: Runtime, tid: int) -> list[int]:
    """Campaign 9: variants A and B, delivered, failed, planned; clicks (one by a bot) through
    ``client`` (a TestClient or an httpx client on a live server); two orders."""
    ids = contacts_for(runtime, tid, PHONES)
    _channel(runtime, "sbx", "0.045")
    plan_messages(
        runtime,
        tid,
        9,
        [
            {"variant": "A", "contact_id": ids[0], "state": "delivered", "parts": 2},
            {"variant": "A", "contact_id": ids[1], "state": "delivered"},
            {"variant": "B", "contact_id": ids[2], "state": "delivered"},
            {"variant": "B", "contact_id": ids[3], "state": "failed", "reason": "invalid_number"},
            {"variant": "B", "contact_id": None, "state": "planned", "carrier": None},
        ],
    )
    a = issue_for(
        runtime,
        tenant_id=tid,
        campaign_id=9,
        variant="A",
        contact_ids=ids[:2],
        link_url="https://shop.example/a",
    )
    b = issue_for(
        runtime,
        tenant_id=tid,
        campaign_id=9,
        variant="B",
        contact_ids=ids[2:4],
        link_url="https://shop.example/b",
    )
    for url, ua in (
        (a["link"][0], PERSON),
        (a["link"][0], PERSON),
        (a["link"][1], PERSON),
        (a["link"][1], "curl/8"),
        (b["link"][0], PERSON),
    ):
        assert (
            client.get(
                "/" + url.rsplit("/", 1)[1], headers={"user-agent": ua}, follow_redirects=False
            ).status_code
            == 302
        )
    t = runtime.clock.now() + timedelta(hours=3)
    order(runtime, tid, "o1", PHONES[0], t, 19900)
    order(runtime, tid, "o2", PHONES[2], t, 5000)
    return ids


def test_report_numbers(client: TestClient, runtime: Runtime) -> None:
    tid, key = _tenant_with_key(runtime, "tea", Role.ANALYST)
    _campaign(client, runtime, tid)
    with runtime.engine.connect() as conn:
        rep = campaign_report(conn, tid, 9)
        with pytest.raises(CampaignNotFound):
            campaign_report(conn, tid, 10)
    t = rep["totals"]
    assert (t["planned"], t["sent"], t["delivered"], t["failed"], t["pending"]) == (5, 4, 3, 1, 1)
    assert (t["clicks_total"], t["clicks_unique"], t["bot_clicks"]) == (4, 3, 1)
    assert (t["conversions"], t["revenue_fen"]) == (2, 24900)
    assert t["parts"] == 5 and t["cost_fen"] == 23  # 5 parts × 0.045 yuan = 22.5 fen
    assert t["delivery_rate"] == 0.75
    assert t["roi"] == round((24900 - 23) / 23, 4)
    va, vb = rep["variants"]
    assert (va["variant"], va["delivered"], va["clicks_unique"], va["revenue_fen"]) == (
        "A",
        2,
        2,
        19900,
    )
    assert (vb["variant"], vb["failed"], vb["clicks_unique"], vb["revenue_fen"]) == (
        "B",
        1,
        1,
        5000,
    )
    assert rep["failures"] == [{"reason": "invalid_number", "count": 1}]
    assert sum(p["planned"] for p in rep["provinces"]) == 5
    # By hand: 138…01 and 186…03 are Beijing numbers, 139…02 Urumqi, 133…04 Nanning; the planned
    # message without a contact has no place. People's clicks: link A0 twice, A1 and B0 once.
    assert {
        (p["province"], p["city"]): (
            p["planned"], p["delivered"], p["failed"], p["clicks_total"], p["clicks_unique"],
            p["conversions"], p["revenue_fen"],
        )
        for p in rep["cities"]
    } == {
        ("北京", "北京"): (2, 2, 0, 3, 2, 2, 24900),
        ("新疆", "乌鲁木齐"): (1, 1, 0, 1, 1, 0, 0),
        ("广西", "南宁"): (1, 0, 1, 0, 0, 0, 0),
        ("未知", "未知"): (1, 0, 0, 0, 0, 0, 0),
    }  # fmt: skip
    assert rep["provinces"][0]["province"] == "北京" and len(rep["provinces"]) == 4
    assert sum(p["clicks_unique"] for p in rep["provinces"]) == 3
    assert sum(p["revenue_fen"] for p in rep["carriers"]) == 24900
    assert {c["carrier"] for c in rep["carriers"]} >= {"cmcc", "未知"}
    assert sum(h["clicks"] for h in rep["clicks_by_hour_of_day"]) == 4
    assert rep["clicks_by_hour_of_day"][10]["clicks"] == 4  # 10:00 in Shanghai
    assert rep["clicks_by_hour_after_send"] == [{"hour": 0, "clicks": 4}]

    r = client.get("/api/v1/reports/campaigns/9", headers=auth(key))
    assert r.status_code == 200 and r.json()["totals"]["conversions"] == 2
    quick = client.get("/api/v1/reports/campaigns/9?places=false", headers=auth(key)).json()
    assert quick["totals"] == rep["totals"] and quick["variants"] == rep["variants"]
    assert quick["failures"] == rep["failures"] and quick["provinces"] == []
    assert {c["carrier"]: c["planned"] for c in quick["carriers"]} == {
        c["carrier"]: c["planned"] for c in rep["carriers"] if c["planned"]
    }
    _, other = _tenant_with_key(runtime, "other", Role.OWNER)
    assert client.get("/api/v1/reports/campaigns/9", headers=auth(other)).status_code == 404
    csv = client.get("/api/v1/reports/campaigns/9/export.csv", headers=auth(key))
    assert csv.status_code == 200 and csv.content.startswith(b"\xef\xbb\xbf")
    assert "invalid_number" in csv.text
    xlsx = client.get("/api/v1/reports/campaigns/9/export.xlsx", headers=auth(key))
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"


@pytest.mark.sqlite_only
def test_report_cli_json(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from hongyan.cli.main import app

    tid, _ = _tenant_with_key(runtime, "tea", Role.OWNER)
    _campaign(client, runtime, tid)
    s = runtime.settings
    for k, v in {
        "HONGYAN_DATABASE_URL": s.database_url,
        "HONGYAN_VAR_DIR": str(s.var_dir),
        "HONGYAN_DATA_KEYS": s.data_keys,
        "HONGYAN_ACTIVE_KEY": s.active_key,
        "HONGYAN_INDEX_KEY": s.index_key,
        "HONGYAN_SESSION_SECRET": s.session_secret,
    }.items():
        monkeypatch.setenv(k, v)
    from hongyan.settings import get_settings

    get_settings.cache_clear()
    r = CliRunner().invoke(app, ["report", "campaign", "9", "--tenant", "tea", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["totals"]["revenue_fen"] == 24900 and len(rep["variants"]) == 2
    r = CliRunner().invoke(app, ["report", "campaign", "99", "--tenant", "tea", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "campaign_not_found"

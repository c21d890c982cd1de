"""A journey's report on both databases: its messages made by the journey itself (enrolment,
two send steps an hour apart), moved as a dispatcher would; every figure checked by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hongyan.campaigns import caps, journeys
from hongyan.campaigns.journeys import JourneyNotFound
from hongyan.clock import FixedClock
from hongyan.contacts import events
from hongyan.contacts import service as contacts
from hongyan.db.scope import TenantScope
from hongyan.db.tables import messages
from hongyan.reports.journeys import journey_report
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import auth
from tests.campaigns.support import Shop, make_shop
from tests.campaigns.test_journeys import _template_id
from tests.reports.support import (
    claim_all,
    console_user,
    deliver,
    make_key,
    submit,
    unclaim,
    undeliver,
)
from tests.web.test_console import login


def _journey(runtime: Runtime, shop: Shop) -> dict[str, Any]:
    """Cart abandonment: offer C at once (step 0), wait an hour, offer A (step 2)."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, clock, shop.tenant_id, {"default": [10, 30], "new": [10, 30]})
        j = journeys.create(
            conn, clock, shop.tenant_id, actor="t", name="购物车挽回", trigger="add_to_cart",
            steps=[
                {"kind": "send", "template_id": _template_id(runtime, shop, shop.versions[2])},
                {"kind": "wait", "minutes": 60},
                {"kind": "send", "template_id": _template_id(runtime, shop, shop.versions[0])},
            ],
        )  # fmt: skip
        # 0 is opted out, 9 never consented: they leave at the first send.
        now = clock.now()
        events.ingest(
            conn, clock, runtime.keyring, shop.tenant_id,
            [events.Event(f"cart{i}", "add_to_cart", shop.phones[i], now) for i in (0, 1, 2, 3, 9)],
        )  # fmt: skip
    journeys.tick(runtime.engine, clock, runtime.keyring)
    first = _ids(runtime, shop, "s0")
    assert len(first) == 3
    # Step 0: contact 1 delivered, 2 undelivered (invalid number), 3 submitted, no receipt yet.
    assert sorted(claim_all(runtime)) == sorted(first.values())
    for i in (1, 2, 3):
        submit(runtime, first[i])
    deliver(runtime, first[1])
    undeliver(runtime, first[2])
    clock.advance(timedelta(minutes=61))
    journeys.tick(runtime.engine, clock, runtime.keyring)
    second = _ids(runtime, shop, "s2")
    assert len(second) == 3
    # Step 2: 1 and 2 delivered; 3's message is still planned (not claimed).
    claimed = claim_all(runtime)
    assert sorted(claimed) == sorted(second.values())
    for i in (1, 2):
        submit(runtime, second[i])
        deliver(runtime, second[i])
    unclaim(runtime, second[3])
    return j


def _ids(runtime: Runtime, shop: Shop, variant: str) -> dict[int, int]:
    """Contact index → message id of a step's messages."""
    with runtime.engine.connect() as conn:
        by_contact = {
            contacts.find_id(conn, runtime.keyring, shop.tenant_id, shop.phones[i]): i
            for i in range(10)
        }
        rows = conn.execute(
            TenantScope(shop.tenant_id)
            .select(messages, messages.c.id, messages.c.contact_id)
            .where(messages.c.source == "journey", messages.c.variant == variant)
        ).all()
    return {by_contact[r.contact_id]: int(r.id) for r in rows}


def test_journey_report_per_step(runtime: Runtime) -> None:
    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    j = _journey(runtime, shop)
    with runtime.engine.connect() as conn:
        rep = journey_report(conn, shop.tenant_id, j["id"])
        assert journey_report(conn, shop.tenant_id, "购物车挽回")["totals"] == rep["totals"]
        with pytest.raises(JourneyNotFound):
            journey_report(conn, shop.tenant_id, j["id"] + 1)
    assert rep["journey_id"] == j["id"] and rep["name"] == "购物车挽回"
    assert [s["variant"] for s in rep["steps"]] == ["s0", "s2"]
    t = rep["totals"]
    assert (t["planned"], t["sent"], t["delivered"], t["failed"], t["pending"]) == (6, 5, 3, 1, 2)
    # Five one-part messages sent at 0.05 yuan a part.
    assert (t["parts"], t["cost_fen"], t["delivery_rate"]) == (5, 25, 0.6)
    assert (t["clicks_total"], t["conversions"]) == (0, 0)
    s0, s2 = rep["variants"]
    assert (s0["variant"], s0["planned"], s0["sent"], s0["delivered"], s0["failed"]) == (
        "s0", 3, 3, 1, 1,
    )  # fmt: skip
    assert (s2["variant"], s2["planned"], s2["sent"], s2["delivered"], s2["pending"]) == (
        "s2", 3, 2, 2, 1,
    )  # fmt: skip
    assert rep["failures"] == [{"reason": "invalid_number", "count": 1}]
    assert rep["failures_by_variant"] == [{"variant": "s0", "reason": "invalid_number", "count": 1}]
    # Every test number (139 0000 000x) was issued in Urumqi.
    assert [(p["province"], p["planned"], p["delivered"]) for p in rep["provinces"]] == [
        ("新疆", 6, 3)
    ]
    assert [(c["carrier"], c["sent"]) for c in rep["carriers"]] == [("cmcc", 5)]
    e = rep["enrolments"]
    assert (e["entered"], e["completed"], e["exited"], e.get("active", 0)) == (5, 3, 2, 0)
    assert (e["outcome.suppressed"], e["outcome.no_consent"]) == (1, 1)


def test_journey_report_api_exports_and_console(client: TestClient, runtime: Runtime) -> None:
    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    j = _journey(runtime, shop)
    with runtime.engine.connect() as conn:
        rep = journey_report(conn, shop.tenant_id, j["id"])
    key = make_key(runtime, shop.tenant_id, Role.ANALYST)
    r = client.get(f"/api/v1/reports/journeys/{j['id']}", headers=auth(key))
    assert r.status_code == 200
    assert r.json()["totals"] == rep["totals"] and r.json()["enrolments"] == rep["enrolments"]
    assert client.get("/api/v1/reports/journeys/999", headers=auth(key)).status_code == 404
    csv = client.get(f"/api/v1/reports/journeys/{j['id']}/export.csv", headers=auth(key))
    assert csv.status_code == 200 and csv.content.startswith(b"\xef\xbb\xbf")
    assert "s0,3,3,1,1" in csv.text and "invalid_number" in csv.text
    xlsx = client.get(f"/api/v1/reports/journeys/{j['id']}/export.xlsx", headers=auth(key))
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    pdf = client.get(f"/api/v1/reports/journeys/{j['id']}/export.pdf", headers=auth(key))
    assert pdf.status_code == 404
    # The console: the reports list links it; its page shows the funnel per step as a table,
    # the enrolments, and exports.
    login(client, console_user(runtime, shop.tenant_id))
    listing = client.get("/console/reports")
    assert f"/console/reports/journeys/{j['id']}" in listing.text
    page = client.get(f"/console/reports/journeys/{j['id']}")
    assert page.status_code == 200
    html = page.text
    assert "旅程 #" in html and "购物车挽回" in html and 'id="enrolment-table"' in html
    assert '<tr data-variant="s0">' in html and '<tr data-variant="s2">' in html
    assert 'data-step="delivered"><td>已送达</td><td class="num">3</td>' in html
    assert 'data-count="entered"><td>进入</td><td class="num">5</td>' in html
    assert client.get("/console/reports/journeys/999").status_code == 404
    page_csv = client.get(f"/console/reports/journeys/{j['id']}/export.csv")
    assert page_csv.status_code == 200 and "s2,3,2,2" in page_csv.text
    # Another tenant cannot see it.
    other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
    other_key = make_key(runtime, other.tenant_id, Role.OWNER)
    assert (
        client.get(f"/api/v1/reports/journeys/{j['id']}", headers=auth(other_key)).status_code
        == 404
    )


@pytest.mark.sqlite_only
def test_journey_and_segment_reports_from_the_cli(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import json

    from typer.testing import CliRunner

    from hongyan.cli.main import app
    from hongyan.settings import get_settings

    shop = make_shop(runtime, 10, opted_out=1, without_consent=1)
    j = _journey(runtime, shop)
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
    get_settings.cache_clear()
    out = tmp_path / "j.csv"
    r = CliRunner().invoke(
        app, ["report", "journey", str(j["id"]), "--tenant", "tea", "--json", "--csv", str(out)]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["totals"]["planned"] == 6 and [v["variant"] for v in rep["variants"]] == [
        "s0",
        "s2",
    ]
    assert "s0,3,3,1,1" in out.read_text(encoding="utf-8-sig")
    r = CliRunner().invoke(app, ["report", "journey", str(j["id"]), "--tenant", "tea"])
    assert r.exit_code == 0 and "s2" in r.stdout and "entered 5" in r.stdout
    # The shop's segment has no campaign: an empty report, not an error.
    r = CliRunner().invoke(
        app, ["report", "segment", str(shop.segment_id), "--tenant", "tea", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert (
        json.loads(r.stdout)["campaigns"] == [] and json.loads(r.stdout)["totals"]["planned"] == 0
    )
    r = CliRunner().invoke(app, ["report", "journey", "99", "--tenant", "tea", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "journey_not_found"

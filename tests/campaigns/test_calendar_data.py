"""Loaded holiday arrangements, on SQLite and PostgreSQL; the calendar's API and CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.campaigns.calendar import ArrangementInvalid, CalendarUnknown, package_years
from hongyan.campaigns.calendar_data import load_arrangement, marketing_calendar, read_file
from hongyan.db.scope import unscoped
from hongyan.db.tables import audit_log, calendar_arrangements
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from tests.api.test_api import _tenant_with_key, auth
from tests.campaigns.test_calendar import ARRANGEMENT_2027
from tests.cli.test_cli import cli  # noqa: F401 - the fixture

NEXT = package_years()[-1] + 1


def _next_year() -> dict[str, object]:
    data = json.loads(json.dumps(ARRANGEMENT_2027).replace("2027", str(NEXT)))
    return data


def test_load_replace_and_read_back(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn, pytest.raises(CalendarUnknown):
        marketing_calendar(conn).day(dt.date(NEXT, 2, 8))
    with runtime.engine.begin() as conn:
        load_arrangement(conn, runtime.clock, _next_year(), actor="ops")
    with runtime.engine.connect() as conn:
        calendar = marketing_calendar(conn)
        assert calendar.day(dt.date(NEXT, 2, 8)).kind == "holiday"
        assert NEXT in calendar.known_years()
    changed = _next_year()
    changed["source"] = "更正"
    changed["holidays"] = changed["holidays"][:1]  # type: ignore[index]
    with runtime.engine.begin() as conn:
        load_arrangement(conn, runtime.clock, changed, actor="ops")
    with runtime.engine.connect() as conn:
        calendar = marketing_calendar(conn)
        assert calendar.arrangement(NEXT).source == "更正"
        assert calendar.day(dt.date(NEXT, 2, 8)).kind != "holiday"
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(calendar_arrangements)).scalar()
            == 1
        )
        actions = conn.execute(
            unscoped(sa.select(audit_log.c.action, audit_log.c.detail), "test reads the log")
        ).all()
    assert [a for a, _ in actions] == ["calendar.load", "calendar.load"]
    assert actions[-1][1] == {"source": "更正", "replaced": True}


def test_a_bad_file_stores_nothing(runtime: Runtime, tmp_path: Path) -> None:
    bad = _next_year()
    bad["holidays"] = [{"name": "春节", "start": "oops", "end": "oops"}]
    with runtime.engine.begin() as conn, pytest.raises(ArrangementInvalid):
        load_arrangement(conn, runtime.clock, bad, actor="ops")
    for content in (b"\xff\xfe not json", b"[1, 2]", b"{"):
        path = tmp_path / "a.json"
        path.write_bytes(content)
        with pytest.raises(ArrangementInvalid):
            read_file(path)
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(calendar_arrangements)).first() is None


def test_api_year_and_upcoming(client: TestClient, runtime: Runtime) -> None:
    _, key = _tenant_with_key(runtime, "tea", Role.ANALYST)
    year = client.get("/api/v1/calendar/2026", headers=auth(key)).json()
    assert year["holidays_known"] is True
    assert {
        "date": "2026-02-17",
        "name": {"zh": "春节", "en": "Spring Festival"},
        "kind": "lunar_festival",
    } in year["occasions"]
    unknown = client.get(f"/api/v1/calendar/{NEXT}", headers=auth(key)).json()
    assert unknown["holidays_known"] is False and "zh" in unknown["holidays_unknown"]
    assert client.get("/api/v1/calendar/1800", headers=auth(key)).status_code == 422
    assert client.get("/api/v1/calendar/2026").status_code == 401
    # The test clock stands at 2026-11-11 10:00 in Shanghai: 双12 is coming up.
    soon = client.get("/api/v1/calendar/upcoming?days=30", headers=auth(key)).json()
    assert soon["today"] == "2026-11-11"
    assert [s["occasion"]["name"]["zh"] for s in soon["suggestions"]][:1] == ["双12"]


def test_cli_load_and_show(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    assert cli("calendar", "--year", str(NEXT))["holidays_known"] is False
    path = tmp_path / "next.json"
    path.write_text(json.dumps(_next_year(), ensure_ascii=False), encoding="utf-8")
    loaded = cli("calendar", "load", str(path))
    assert loaded["year"] == NEXT and len(loaded["holidays"]) == 2
    shown = cli("calendar", "--year", str(NEXT))
    assert shown["holidays_known"] is True
    assert shown["arrangement"]["source"] == "测试用安排（非官方）"
    path.write_text("{}", encoding="utf-8")
    error = cli("calendar", "load", str(path), ok=False)
    assert error["error"]["code"] == "calendar_arrangement_invalid"

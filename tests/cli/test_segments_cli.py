"""`hongyan segments …`, `hongyan rfm`, `hongyan lifecycle`, `hongyan stores …`,
`hongyan audience …` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hongyan.cli.main import app
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)


def test_audience_flow(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮")
    events = tmp_path / "events.csv"
    rows = ["event_id,kind,phone,occurred_at,amount,tags"]
    for i in range(30):
        rows.append(
            f"o{i},order,1380000{i:04d},2026-{1 + i % 10:02d}-15T10:00:00,{10 * (i + 1)},茶"
        )
    rows.append("b1,browse,13900001111,2026-10-02T10:00:00,,咖啡")
    events.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert cli("events", "import", str(events), "--tenant", "tea")["accepted"] == 31

    rule = json.dumps({"field": "revenue", "op": "gte", "value": 200}, ensure_ascii=False)
    assert cli("segments", "preview", "--tenant", "tea", "--rule", rule)["count"] == 11
    made = cli("segments", "create", "大客户", "--tenant", "tea", "--rule", rule)
    assert made["name"] == "大客户"
    rule_file = tmp_path / "rule.json"
    rule_file.write_text('{"field": "interest", "op": "has", "value": "茶"}', encoding="utf-8")
    cli("segments", "update", "大客户", "--tenant", "tea", "--rule", f"@{rule_file}")
    shown = cli("segments", "show", "大客户", "--tenant", "tea")
    assert shown["rule"]["field"] == "interest"
    got = cli("segments", "preview", "大客户", "--tenant", "tea", "--reach", "marketing")
    assert got["count"] == 30 and got["reach"]["no_consent"] == 30
    assert "1380000" not in json.dumps(got)
    assert [s["name"] for s in cli("segments", "list", "--tenant", "tea")["segments"]] == ["大客户"]
    snap = cli("segments", "snapshot", "大客户", "--tenant", "tea", "--campaign", "c1")
    assert snap["counts"]["matched"] == 30 and snap["counts"]["included"] == 0

    rfm = cli("rfm", "--tenant", "tea", "--recompute")
    assert rfm["buyers"] == 30 and sum(rfm["groups"].values()) == 30
    assert sum(rfm["scores"]["m"].values()) == 30 and rfm["scores"]["m"]["5"] == 6
    assert sum(cli("lifecycle", "--tenant", "tea")["stages"].values()) == 31

    cli("stores", "add", "西湖店", "--tenant", "tea", "--lat", "30.25", "--lon", "120.15")
    assert cli("stores", "list", "--tenant", "tea")["stores"][0]["name"] == "西湖店"
    settings = cli(
        "audience", "settings", "--tenant", "tea", "--active-days", "14", "--split", "r=4"
    )
    assert settings["lifecycle"]["active_days"] == 14 and settings["rfm_splits"]["r"] == 4
    again = cli("audience", "recompute", "--tenant", "tea")
    assert again["locations"]["located"] >= 30  # the number's city centre

    bad = cli("segments", "preview", "--tenant", "tea", "--rule", "{oops", ok=False)
    assert bad["error"]["code"] == "validation_failed"
    unknown = cli(
        "segments", "create", "x", "--tenant", "tea", "--rule", '{"field": "salary"}', ok=False
    )
    assert unknown["error"]["code"] == "segment_rule_invalid"

    out = CliRunner().invoke(app, ["segments", "export", "大客户", "--tenant", "tea"])
    assert out.exit_code == 0 and out.stdout.count("\n") == 31 and "****" in out.stdout
    cli("segments", "delete", "大客户", "--tenant", "tea")

"""`hongyan contacts …`, `hongyan events import` and `hongyan retention run` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hongyan.cli.main import app
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)


def test_contacts_flow(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮")
    people = tmp_path / "people.csv"
    people.write_bytes(
        "手机号,姓名,积分\n13812345678,李小龙,100\n138-1234-5678,,\n12345,坏,\n".encode("gbk")
    )
    out = cli(
        "contacts", "import", str(people), "--tenant", "tea", "--consent-source", "门店",
        "--consent-proof", "纸质登记表", "--tags", "老客,2026", "--map", "积分=attr:积分:number",
    )  # fmt: skip
    assert (out["rows"], out["imported"], out["duplicates"], out["invalid"]) == (3, 1, 1, 1)
    listed = cli("contacts", "list", "--tenant", "tea")
    [c] = listed["contacts"]
    assert c["phone_masked"] == "138****5678" and c["tags"] == ["2026", "老客"]
    assert c["attrs"] == {"积分": 100}
    assert "13812345678" not in str(listed)
    shown = cli("contacts", "show", "+8613812345678", "--tenant", "tea")
    assert shown["consent"]["marketing"]["action"] == "granted"
    fields = cli("contacts", "fields", "--tenant", "tea", "--define", "生日券:boolean")
    assert {(a["name"], a["type"]) for a in fields["attributes"]} == {
        ("积分", "number"),
        ("生日券", "boolean"),
    }
    events_file = tmp_path / "events.csv"
    events_file.write_text(
        "event_id,kind,phone,occurred_at,amount,tags\n"
        "o1,order,13812345678,2026-10-01T10:00:00,88.5,茶\n"
        "b1,browse,13900001111,2026-10-02T10:00:00,,茶\n",
        encoding="utf-8",
    )
    ev = cli("events", "import", str(events_file), "--tenant", "tea")
    assert (ev["accepted"], ev["contacts_created"]) == (2, 1)
    assert cli("events", "import", str(events_file), "--tenant", "tea")["duplicates"] == 2
    changed = tmp_path / "changed.csv"
    changed.write_text(
        "event_id,kind,phone,occurred_at,amount,tags\n"
        "o1,order,13812345678,2026-10-01T10:00:00,88.6,茶\n"  # another amount
        "b1,browse,13900001111,2026-10-02T10:00:00,,茶\n",
        encoding="utf-8",
    )
    ev = cli("events", "import", str(changed), "--tenant", "tea")
    assert (ev["accepted"], ev["duplicates"], ev["conflicts"], ev["conflict_ids"]) == (
        0, 1, 1, ["o1"],
    )  # fmt: skip
    shown = CliRunner().invoke(app, ["events", "import", str(changed), "--tenant", "tea"])
    assert shown.exit_code == 0, shown.output
    assert "1 already stored, 1 conflicting" in shown.output
    assert "with other content and were not stored: o1" in shown.output
    exported = cli("contacts", "export", "13812345678", "--tenant", "tea")
    assert exported["contact"]["name"] == "李小龙" and exported["events"][0]["amount_fen"] == 8850
    gone = cli("contacts", "forget", "13812345678", "--tenant", "tea")
    assert gone["events"] == 1
    assert cli("contacts", "list", "--tenant", "tea")["total"] == 1
    assert cli("retention", "run")["consent_records"] == 0
    assert cli("contacts", "segments")["prefixes"] > 490_000
    bad = cli("contacts", "import", str(tmp_path / "missing.csv"), "--tenant", "tea", ok=False)
    assert bad["error"]["code"] == "not_found"


def test_contacts_zones(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Contacts stored before zones were kept get their number's zone; a dry run only counts."""
    import sqlalchemy as sa

    from hongyan.cli.main import open_runtime
    from hongyan.db.scope import unscoped
    from hongyan.db.tables import contacts

    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮")
    people = tmp_path / "people.csv"
    people.write_text("phone\n+12125551234\n+819012345678\n13812345678\n", encoding="utf-8")
    assert cli("contacts", "import", str(people), "--tenant", "tea")["imported"] == 3
    runtime = open_runtime()
    with runtime.engine.begin() as conn:  # as before migration 0016
        conn.execute(unscoped(sa.update(contacts).values(time_zone=None), "test"))
    dry = cli("contacts", "zones", "--tenant", "tea", "--dry-run")
    assert (dry["read"], dry["filled"], dry["dry_run"]) == (2, 2, True)
    done = cli("contacts", "zones", "--tenant", "tea")
    assert done["by_zone"] == {"America/New_York": 1, "Asia/Tokyo": 1}
    assert cli("contacts", "zones", "--tenant", "tea")["read"] == 0
    assert cli("contacts", "zones", "--tenant", "nobody", ok=False)["error"]["code"]
    runtime.close()

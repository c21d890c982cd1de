"""The `hongyan` command line, driven as a user would, with --json output parsed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hongyan.cli.main import app
from hongyan.settings import get_settings


@pytest.fixture
def cli(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name in list(os.environ):
        if name.startswith("HONGYAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HONGYAN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HONGYAN_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> dict:  # type: ignore[type-arg]
        result = runner.invoke(app, [*args, "--json"])
        assert (result.exit_code == 0) == ok, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    yield run
    get_settings.cache_clear()


def test_setup_flow(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade")["revision"]
    secrets_file = tmp_path / "var" / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    t = cli("tenant", "create", "tea-shop", "--name", "鸿雁茶饮", "--signature", "【鸿雁茶饮】")
    assert t["slug"] == "tea-shop"
    u = cli(
        "user",
        "create",
        "--tenant",
        "tea-shop",
        "--email",
        "Boss@Tea.cn",
        "--password",
        "a-long-password",
        "--phone",
        "+8613812345678",
    )
    assert u["email"] == "boss@tea.cn" and u["role"] == "owner"
    k = cli("apikey", "create", "--tenant", "tea-shop", "--name", "erp")
    assert k["key"].startswith("hy_")
    assert [x["slug"] for x in cli("tenant", "list")["tenants"]] == ["tea-shop"]
    assert cli("keys", "rotate")["rotated"] == 0
    assert b"13812345678" not in secrets_file.read_bytes()


def test_errors_are_typed_and_change_nothing(cli) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    assert cli("tenant", "create", "x", "--name", "X", ok=False)["error"]["code"] == (
        "validation_failed"
    )
    bad_sig = cli("tenant", "create", "shop", "--name", "S", "--signature", "[Shop]", ok=False)
    assert "签名" in bad_sig["error"]["message"]["zh"]
    assert cli("tenant", "list")["tenants"] == []
    cli("tenant", "create", "shop", "--name", "S")
    assert cli("tenant", "create", "shop", "--name", "S", ok=False)["error"]["code"] == "conflict"
    missing = cli(
        "user",
        "create",
        "--tenant",
        "nope",
        "--email",
        "a@b.cn",
        "--password",
        "a-long-password",
        ok=False,
    )
    assert missing["error"]["code"] == "not_found"
    weak = cli(
        "user", "create", "--tenant", "shop", "--email", "a@b.cn", "--password", "short", ok=False
    )
    assert weak["error"]["code"] == "weak_password"


def test_unmigrated_database_is_reported(cli) -> None:  # type: ignore[no-untyped-def]
    err = cli("tenant", "create", "shop", "--name", "S", ok=False)["error"]
    assert err["code"] == "database_not_migrated"


def test_demo_prepares_tenant_and_login(cli, tmp_path: Path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    first = cli("demo", "--no-serve")
    assert first["email"] and first["password"] and first["api_key_note"].startswith("hy_")
    again = cli("demo", "--no-serve")
    assert again["password"] == first["password"]
    login = tmp_path / "var" / "demo-login.txt"
    assert stat.S_IMODE(login.stat().st_mode) == 0o600
    _demo_data_is_as_promised(database_url)


def _demo_data_is_as_promised(url: str) -> None:
    """20,000 contacts with consent (less the opted-out), and a year of behaviour with the
    customers the audiences are about: repeat buyers, one-time buyers gone quiet, browsers who
    never buy."""
    import sqlalchemy as sa

    from hongyan.db.scope import unscoped
    from hongyan.db.tables import consent_records, contact_activity, contacts

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:

            def count(table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
                stmt = sa.select(sa.func.count()).select_from(table).where(*where)
                return int(conn.execute(unscoped(stmt, "test reads the demo")).scalar_one())

            a = contact_activity.c
            assert count(contacts) == 20_000
            assert 19_000 <= count(consent_records, consent_records.c.action == "granted") < 20_000
            repeat = count(contact_activity, a.orders_count >= 2)
            once = count(contact_activity, a.orders_count == 1)
            browsers = count(contact_activity, a.orders_count == 0, a.last_browse_at.is_not(None))
            assert repeat > 1000 and once > 1000 and browsers > 1000, (repeat, once, browsers)
    finally:
        engine.dispose()


def test_send_and_show(cli) -> None:  # type: ignore[no-untyped-def]
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "T", "--signature", "【鸿雁茶饮】")
    args = (
        "send",
        "--tenant",
        "tea",
        "--to",
        "+8613812345678",
        "--text",
        "【鸿雁茶饮】您好",
        "--idempotency-key",
        "k1",
    )
    sent = cli(*args)
    assert sent["state"] == "planned" and sent["to"] == "138****5678" and sent["created"]
    again = cli(*args)
    assert again["id"] == sent["id"] and not again["created"]
    shown = cli("messages", "show", str(sent["id"]), "--tenant", "tea")
    assert shown["id"] == sent["id"] and "13812345678" not in json.dumps(shown)
    bad = cli("send", "--tenant", "tea", "--to", "12345", "--text", "x", ok=False)
    assert bad["error"]["code"] == "invalid_number"
    assert cli("messages", "show", "999", "--tenant", "tea", ok=False)["error"]["code"] == (
        "not_found"
    )

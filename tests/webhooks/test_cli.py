"""`hongyan webhooks add | list | deliveries --json`, driven as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hongyan.cli.main import app
from hongyan.settings import get_settings
from hongyan.webhooks import delivery


@pytest.fixture
def cli(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    for name in list(os.environ):
        if name.startswith("HONGYAN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HONGYAN_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HONGYAN_DATABASE_URL", database_url)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, [*args, "--json"])
        assert (result.exit_code == 0) == ok, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    yield run
    get_settings.cache_clear()


def test_add_list_deliveries(cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    cli("db", "upgrade")
    tenant = cli("tenant", "create", "tea-shop", "--name", "鸿雁茶饮")["id"]
    refused = cli(
        "webhooks", "add", "--tenant", "tea-shop", "--url", "http://127.0.0.1:9/", ok=False
    )
    assert refused["error"]["code"] == "webhook_address_refused"
    assert "HONGYAN_WEBHOOK_ALLOW_PRIVATE" in refused["error"]["message"]["en"]
    monkeypatch.setenv("HONGYAN_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    made = cli(
        "webhooks",
        "add",
        "--tenant",
        "tea-shop",
        "--url",
        "http://127.0.0.1:9/in",
        "--event",
        "message.reply",
        "--event",
        "message.opt_out",
    )
    assert made["secret"].startswith("whsec_") and made["events"] == [
        "message.reply",
        "message.opt_out",
    ]
    bad = cli("webhooks", "add", "--tenant", "tea-shop", "--url", "x", "--event", "nope", ok=False)
    assert bad["error"]["code"] == "unknown_webhook_event"
    listed = cli("webhooks", "list", "--tenant", "tea-shop")["webhooks"]
    assert [w["id"] for w in listed] == [made["id"]] and "secret" not in listed[0]
    assert made["secret"] not in json.dumps(listed)
    assert cli("webhooks", "deliveries", str(made["id"]), "--tenant", "tea-shop")["items"] == []
    # A test event, one failed attempt against a closed port, visible in the log.
    from hongyan.runtime import Runtime
    from hongyan.webhooks import service

    runtime = Runtime.create(get_settings())
    with runtime.engine.begin() as conn:
        service.send_test(conn, runtime.clock, tenant, made["id"], actor="test")

    async def one() -> int:
        async with delivery.Worker(runtime, owner="cli-test", timeout=2) as w:
            return await w.pass_once()

    assert asyncio.run(one()) == 1
    runtime.close()
    page = cli("webhooks", "deliveries", str(made["id"]), "--tenant", "tea-shop")
    (d,) = page["items"]
    assert d["event"] == "webhook.test" and d["state"] == "pending" and d["attempts"] == 1
    assert d["attempt_log"][0]["error"] and page["next_before"] is None
    for args, shown in ((["list"], "127.0.0.1:9/in"), (["deliveries", str(made["id"])], "test")):
        text = CliRunner().invoke(app, ["webhooks", *args, "--tenant", "tea-shop"])
        assert text.exit_code == 0 and shown in text.stdout, text.stdout
    missing = cli("webhooks", "deliveries", "999", "--tenant", "tea-shop", ok=False)
    assert missing["error"]["code"] == "webhook_not_found"

"""`hongyan channels`, `routes`, `suppressions`, `tenant ext`, driven as an operator would."""

from __future__ import annotations

from tests.cli.test_cli import cli  # noqa: F401 - the fixture


def test_channels_routes_and_suppressions(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    cli("tenant", "create", "tea-shop", "--name", "鸿雁茶饮")
    added = cli(
        "channels",
        "add",
        "cmcc-1",
        "--url",
        "smpp://sp01:s3cret@127.0.0.1:2775",
        "--config",
        "source_addr=10690",
        "--config",
        "invalid_errs=001,MK:0001",
        "--rate",
        "200",
        "--binds",
        "2",
        "--carriers",
        "cmcc",
        "--price",
        "0.035",
    )
    assert added["config"] == {
        "host": "127.0.0.1",
        "port": 2775,
        "system_id": "sp01",
        "source_addr": "10690",
        "invalid_errs": ["001", "MK:0001"],
    }
    assert added["secrets"] == ["password"]
    cli("channels", "add", "backup", "--url", "smpp://sp02:pw@127.0.0.1:2776")
    err = cli("channels", "add", "bad", "--kind", "carrier-pigeon", ok=False)
    assert err["error"]["code"] == "validation_failed"
    assert (
        cli("channels", "add", "cmcc-1", "--url", "smpp://a:b@h:1", ok=False)["error"]["code"]
        == "conflict"
    )
    listed = cli("channels", "list")["channels"]
    assert [c["name"] for c in listed] == ["backup", "cmcc-1"]
    assert "s3cret" not in str(listed) and "secret_cipher" not in listed[0]
    cli("channels", "update", "backup", "--disable", "--rate", "50")
    assert [c["enabled"] for c in cli("channels", "list")["channels"]] == [False, True]

    route = cli("routes", "set", "cmcc-1", "backup", "--tenant", "tea-shop", "--lane", "marketing")
    assert route["lane"] == 2 and route["channels"] == ["cmcc-1", "backup"]
    assert cli("routes", "list", "--tenant", "tea-shop")["routes"] == [
        {"lane": 2, "carrier": "*", "channels": ["cmcc-1", "backup"]}
    ]
    missing = cli("routes", "set", "nowhere", "--tenant", "tea-shop", ok=False)
    assert missing["error"]["code"] == "unknown_channel"

    assert cli("tenant", "ext", "tea-shop", "01")["sms_ext"] == "01"
    cli("tenant", "create", "bakery", "--name", "面包")
    assert cli("tenant", "ext", "bakery", "012", ok=False)["error"]["code"] == "conflict"

    s = cli("suppressions", "add", "--tenant", "tea-shop", "--to", "+8613812345678")
    assert s == {"tenant": "tea-shop", "to": "138****5678", "reason": "manual", "added": True}
    again = cli("suppressions", "add", "--tenant", "tea-shop", "--to", "+8613812345678")
    assert again["added"] is False
    rows = cli("suppressions", "list", "--tenant", "tea-shop")["suppressions"]
    assert [(r["phone_masked"], r["reason"], r["scope"]) for r in rows] == [
        ("138****5678", "manual", "all")
    ]
    sent = cli("send", "--tenant", "tea-shop", "--to", "+8613812345678", "--text", "hi", ok=False)
    assert sent["error"]["code"] == "number_suppressed"
    # an opt-out reported here also withdraws marketing in the ledger, as the API's does
    out = cli("suppressions", "add", "--tenant", "tea-shop", "--to", "+8613900001111",
              "--reason", "opt_out", "--detail", "电话里说不要再发")  # fmt: skip
    assert out["added"] is True
    copy = cli("contacts", "export", "+8613900001111", "--tenant", "tea-shop")
    assert [(r["purpose"], r["action"], r["source"], r["proof"], r["actor"])
            for r in copy["consent_records"]] == [
        ("marketing", "revoked", "cli", "电话里说不要再发", "cli")
    ]  # fmt: skip
    cli("channels", "remove", "backup")
    assert [c["name"] for c in cli("channels", "list")["channels"]] == ["cmcc-1"]

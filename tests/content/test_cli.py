"""The content commands, driven as an operator would: lint, templates, staff, review, send."""

from __future__ import annotations

from tests.cli.test_cli import cli  # noqa: F401  (the fixture)

SIG = "【鸿雁茶饮】"
PROMO = f"{SIG}{{name|您好}}，会员日第二杯半价，今晚21点前有效，回T退订"


def test_lint_templates_review_and_send(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮", "--signature", SIG)

    bad = cli("lint", "--tenant", "tea", "年中大促，免 费领取", ok=False)
    assert not bad["ok"] and bad["chars"] == 10
    assert {f["rule"] for f in bad["findings"]} >= {"signature.missing", "word.sensitive"}
    fixed = cli("lint", "--tenant", "tea", "--fix", "年中大促，免 费领取")
    assert fixed["ok"] and fixed["text"] == f"{SIG}年中大促，0元体验领取，回T退订"
    notice = cli("lint", "--tenant", "tea", "--category", "notification", f"{SIG}您的订单已发货")
    assert notice["ok"] and notice["findings"] == []
    err = cli("lint", "--tenant", "tea", "", ok=False)
    assert err["error"]["code"] == "text_empty"

    word = cli("words", "add", "秒杀", "--tenant", "tea", "--replacement", "限时抢购")
    assert word["list"] == "sensitive"
    flagged = cli("lint", "--tenant", "tea", f"{SIG}秒杀开始，今晚21点前有效，回T退订", ok=False)
    assert [f["term"] for f in flagged["findings"]] == ["秒杀"]
    assert cli("words", "list", "--tenant", "tea")["words"][0]["term"] == "秒杀"

    made = cli(
        "templates", "create", "--tenant", "tea", "--name", "会员日", "--body", PROMO, "--submit"
    )
    assert made["status"] == "pending"
    refused = cli(
        "templates",
        "create",
        "--tenant",
        "tea",
        "--name",
        "x",
        "--body",
        "半价",
        "--submit",
        ok=False,
    )
    assert refused["error"]["code"] == "template_has_errors"

    cli("staff", "create", "--email", "rev@platform.test", "--password", "reviewer-password-1")
    [item] = cli("review", "queue")["queue"]
    assert item["kind"] == "template" and item["tenant"] == "tea"
    nobody = cli("review", "approve", "template", str(item["id"]), "--as", "x@y.z", ok=False)
    assert nobody["error"]["code"] == "not_found"
    done = cli("review", "approve", "template", str(item["id"]), "--as", "rev@platform.test")
    assert done["status"] == "approved"
    assert cli("review", "queue")["queue"] == []

    free = cli(
        "send",
        "--tenant",
        "tea",
        "--to",
        "+8613812345678",
        "--category",
        "marketing",
        "--text",
        f"{SIG}周末半价，回T退订",
        ok=False,
    )
    assert free["error"]["code"] == "template_required"
    sent = cli(
        "send",
        "--tenant",
        "tea",
        "--to",
        "+8613812345678",
        "--template-id",
        str(made["id"]),
        "--param",
        "name=李女士",
    )
    assert sent["category"] == "marketing" and sent["state"] == "planned"
    assert sent["body"] == f"{SIG}李女士，会员日第二杯半价，今晚21点前有效，回T退订"
    assert sent["template_version_id"] == item["id"]

    shown = cli("templates", "show", str(made["id"]), "--tenant", "tea")
    assert shown["live_version"] == 1 and shown["versions"][0]["reviewed_by"] == "staff:1"

    policy = cli("tenant", "policy", "tea", "--unsubscribe-text", "拒收请回复R", "--ad-mark")
    assert policy["unsubscribe_text"] == "拒收请回复R" and policy["require_ad_mark"]
    fixed = cli("lint", "--tenant", "tea", "--fix", f"{SIG}会员日第二杯半价，今晚21点前有效")
    assert fixed["text"] == f"{SIG}（广告）会员日第二杯半价，今晚21点前有效，拒收请回复R"
    finance = cli("tenant", "policy", "tea", "--notifications-only")
    assert finance["marketing_allowed"] is False
    blocked = cli(
        "send",
        "--tenant",
        "tea",
        "--to",
        "+8613812345678",
        "--template-id",
        str(made["id"]),
        ok=False,
    )
    assert blocked["error"]["code"] == "marketing_not_allowed"


def test_signatures_and_staff(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    cli("db", "upgrade")
    cli("tenant", "create", "tea", "--name", "鸿雁茶饮")
    sig = cli("signatures", "submit", "【鸿雁新店】", "--tenant", "tea", "--note", "新门店")
    assert sig["status"] == "pending"
    cli("staff", "create", "--email", "rev@platform.test", "--password", "reviewer-password-1")
    [item] = cli("review", "queue", "--kind", "signature")["queue"]
    rejected = cli(
        "review",
        "reject",
        "signature",
        str(item["id"]),
        "--as",
        "rev@platform.test",
        "--reason",
        "缺少营业执照",
    )
    assert rejected["status"] == "rejected"
    listed = cli("signatures", "list", "--tenant", "tea")["signatures"]
    assert listed[0]["reason"] == "缺少营业执照"
    key = cli("staff", "apikey", "rev@platform.test")
    assert key["key"].startswith("hys_")
    assert [s["email"] for s in cli("staff", "list")["staff"]] == ["rev@platform.test"]
    cli("staff", "deactivate", "rev@platform.test")
    cli("signatures", "submit", "【鸿雁新店】", "--tenant", "tea", "--note", "附执照")
    [again] = cli("review", "queue")["queue"]
    stopped = cli(
        "review", "approve", "signature", str(again["id"]), "--as", "rev@platform.test", ok=False
    )
    assert stopped["error"]["code"] == "permission_denied"
    dup = cli("staff", "create", "--email", "rev@platform.test", "--password", "x" * 12, ok=False)
    assert dup["error"]["code"] == "conflict"

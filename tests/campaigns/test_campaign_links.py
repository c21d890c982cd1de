"""A campaign's ``{link}`` target and ``{coupon}`` pool, checked when it is made (as a journey's
send step's are, by the same code and with the same words): every refusal through the service,
the API (a 422 body in Chinese and English) and the CLI, on SQLite and PostgreSQL, each leaving
nothing stored; a good campaign's campaign-wide link and pool reach the variants that place
them, and its launch gives every recipient their own link and coupon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.campaigns import extras, journeys
from hongyan.campaigns import service as campaigns
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import audit_log, campaign_variants, coupons, links, messages
from hongyan.errors import HongyanError
from hongyan.runtime import Runtime
from hongyan.security.roles import Role
from hongyan.tracking import coupons as coupon_service
from tests.api.test_api import auth
from tests.campaigns.support import Shop, make_shop
from tests.campaigns.test_journey_links import COUPON_ONLY, LINK_AND_COUPON, LINK_ONLY, TARGET
from tests.campaigns.test_journeys import _template_id
from tests.cli.test_cli import cli  # noqa: F401  (the fixture)
from tests.content.support import approved_version
from tests.reports.support import make_key

OTHER = "https://shop.example/other"


@dataclass
class Kit:
    shop: Shop
    both: int  # template versions: {link} and {coupon}
    link: int  # {link} only
    coupon: int  # {coupon} only
    plain: int  # neither
    mine: int  # the shop's pool
    theirs: int  # another tenant's pool
    templates: dict[int, int] = field(default_factory=dict)  # version → template id


@pytest.fixture
def kit(runtime: Runtime) -> Kit:
    shop = make_shop(runtime, 6, opted_out=0, without_consent=0)
    other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
    made = [approved_version(runtime, shop.tenant_id, b) for b in (LINK_AND_COUPON, LINK_ONLY)]
    made.append(approved_version(runtime, shop.tenant_id, COUPON_ONLY))
    with runtime.engine.begin() as conn:
        now = runtime.clock.now()
        mine = coupon_service.create_pool(conn, shop.tenant_id, now, name="会员券")
        theirs = coupon_service.create_pool(conn, other.tenant_id, now, name="别家的券")
    k = Kit(shop, *made, shop.versions[2], mine, theirs)
    k.templates = {v: _template_id(runtime, shop, v) for v in (*made, k.plain)}
    return k


# (the variants' templates and own values, the campaign's values, what the message says in
# English and in Chinese, the field it names)
Case = tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], str, str, str]


def _cases(k: Kit) -> list[Case]:
    http = ("link_url is an http(s) address", "链接目标须为 http(s) 网址")
    cases: list[Case] = [
        # a variant's own values
        ([("link", {})], {}, "variant A: the template places {link}", "版本 A：模板含 {link}，请填写", "link_url"),  # noqa: E501
        ([("link", {"link_url": "   "})], {}, "places {link}", "模板含 {link}", "link_url"),
        ([("link", {"link_url": "ftp://shop.example/x"})], {}, *http, "link_url"),
        ([("link", {"link_url": "javascript:alert(1)"})], {}, *http, "link_url"),
        ([("link", {"link_url": "https://"})], {}, *http, "link_url"),  # no host
        ([("link", {"link_url": "https://shop.example/a b"})], {}, *http, "link_url"),
        ([("link", {"link_url": "https://s.example/" + "x" * 500})], {}, *http, "link_url"),
        ([("both", {"link_url": TARGET})], {}, "places {coupon}", "请选择优惠券池", "coupon_pool_id"),  # noqa: E501
        ([("both", {"link_url": TARGET, "coupon_pool_id": 99999})], {}, "no coupon pool 99999", "找不到优惠券池 99999", "coupon_pool_id"),  # noqa: E501
        ([("coupon", {"coupon_pool_id": k.theirs})], {}, f"no coupon pool {k.theirs}", f"找不到优惠券池 {k.theirs}", "coupon_pool_id"),  # noqa: E501
        ([("plain", {"link_url": TARGET})], {}, "does not place {link}", "模板不含 {link}", "link_url"),  # noqa: E501
        ([("plain", {"coupon_pool_id": k.mine})], {}, "does not place {coupon}", "模板不含 {coupon}", "coupon_pool_id"),  # noqa: E501
        ([("link", {"link_url": TARGET}), ("plain", {"link_url": TARGET})], {}, "variant B: the template does not place {link}", "版本 B：", "link_url"),  # noqa: E501
        # the campaign's values
        ([("plain", {})], {"link_url": TARGET}, "no variant's template places {link}", "所选模板都不含 {link}", "link_url"),  # noqa: E501
        ([("plain", {})], {"coupon_pool_id": k.mine}, "no variant's template places {coupon}", "所选模板都不含 {coupon}", "coupon_pool_id"),  # noqa: E501
        ([("link", {})], {"link_url": "shop.example/x"}, "Campaign: link_url is an http(s)", "活动设置有误：链接目标须为", "link_url"),  # noqa: E501
        ([("coupon", {})], {"coupon_pool_id": k.theirs}, "Campaign: no coupon pool", "找不到优惠券池", "coupon_pool_id"),  # noqa: E501
        ([("link", {}), ("coupon", {})], {"link_url": TARGET}, "variant B: the template places {coupon}", "版本 B：模板含 {coupon}", "coupon_pool_id"),  # noqa: E501
    ]  # fmt: skip
    return cases


def _versions(k: Kit) -> dict[str, int]:
    return {"both": k.both, "link": k.link, "coupon": k.coupon, "plain": k.plain}


def _stored(runtime: Runtime, k: Kit) -> tuple[int, int, int]:
    """The shop's campaigns, variants and campaign.create audit records."""
    scope = TenantScope(k.shop.tenant_id)
    with runtime.engine.connect() as conn:
        made = len(campaigns.list_campaigns(conn, k.shop.tenant_id))
        variants = conn.execute(scope.select(campaign_variants, sa.func.count())).scalar_one()
        audited = conn.execute(
            unscoped(
                sa.select(sa.func.count())
                .select_from(audit_log)
                .where(audit_log.c.action == "campaign.create"),
                "test",
            )
        ).scalar_one()
    return made, int(variants), int(audited)


def _create(runtime: Runtime, k: Kit, variants: list[dict[str, Any]], **kw: Any) -> Any:
    with runtime.engine.begin() as conn:
        return campaigns.create(
            conn, runtime.clock, runtime.keyring, k.shop.tenant_id, name=kw.pop("name", "坏"),
            segment=k.shop.segment_id, variants=variants, actor="t", **kw,
        )  # fmt: skip


def test_every_refusal_through_the_service(runtime: Runtime, kit: Kit) -> None:
    named = _versions(kit)
    for spec, wide, en, zh, fld in _cases(kit):
        variants = [{"template_version_id": named[t], **own} for t, own in spec]
        with pytest.raises(campaigns.CampaignInvalid) as refused:
            _create(runtime, kit, variants, **wide)
        err = refused.value
        assert err.status == 422 and err.code == "campaign_invalid"
        assert en in err.message_en and zh in err.message_zh, (err.message_en, err.message_zh)
        assert err.details["field"] == fld
    # a pool's id is a number (the API makes it one; a caller of the service may not)
    with pytest.raises(campaigns.CampaignInvalid, match="pool's id"):
        _create(runtime, kit, [{"template_version_id": kit.coupon, "coupon_pool_id": "1"}])
    assert _stored(runtime, kit) == (0, 0, 0)


def test_a_journey_and_a_campaign_refuse_with_the_same_words(runtime: Runtime, kit: Kit) -> None:
    """One check for both (``extras.targets``): the words after where the problem is agree."""
    bad = [
        {},
        {"link_url": "https://shop.example/a b"},
        {"link_url": TARGET, "coupon_pool_id": kit.theirs},
    ]
    for own in bad:
        with pytest.raises(HongyanError) as by_campaign:
            _create(runtime, kit, [{"template_version_id": kit.both, **own}])
        with pytest.raises(HongyanError) as by_journey, runtime.engine.begin() as conn:
            journeys.create(
                conn, runtime.clock, kit.shop.tenant_id, actor="t", name="坏",
                trigger="add_to_cart",
                steps=[{"kind": "send", "template_id": kit.templates[kit.both], **own}],
            )  # fmt: skip
        c, j = by_campaign.value, by_journey.value
        assert c.message_en.split("variant A: ", 1)[1] == j.message_en.split("step 1: ", 1)[1]
        assert c.message_zh.split("版本 A：", 1)[1] == j.message_zh.split("第 1 步：", 1)[1]
        assert c.details["field"] == j.details["field"]


def test_without_a_hook_the_placeholders_are_refused_at_creation(
    runtime: Runtime, kit: Kit
) -> None:
    tracking = extras.active()
    assert tracking is not None
    extras.unregister("tracking")
    try:
        with pytest.raises(extras.ExtrasUnavailable):
            _create(runtime, kit, [{"template_version_id": kit.link, "link_url": TARGET}])
        _create(runtime, kit, [{"template_version_id": kit.plain}], name="无链接")  # no need
    finally:
        extras.register("tracking", tracking)
    assert _stored(runtime, kit)[0] == 1


def test_the_campaigns_link_and_pool_reach_the_variants_that_place_them(
    runtime: Runtime, kit: Kit
) -> None:
    camp = _create(
        runtime, kit, name="会员日",
        variants=[
            {"template_version_id": kit.both},
            {"template_version_id": kit.plain},
            {"template_version_id": kit.link, "link_url": OTHER},  # its own wins
        ],
        link_url=f"  {TARGET} ", coupon_pool_id=kit.mine,
    )  # fmt: skip
    got = {v["name"]: (v["link_url"], v["coupon_pool_id"]) for v in camp["variants"]}
    assert got == {"A": (TARGET, kit.mine), "B": (None, None), "C": (OTHER, None)}
    with runtime.engine.begin() as conn:
        done = campaigns.launch(
            conn, runtime.clock, runtime.keyring, kit.shop.tenant_id, camp["id"], actor="t"
        )
    assert done["counts"]["planned"] == 6
    scope = TenantScope(kit.shop.tenant_id)
    with runtime.engine.connect() as conn:
        sent = {r.contact_id: r for r in conn.execute(scope.select(messages))}
        issued = list(conn.execute(scope.select(links)))
        given = list(conn.execute(scope.select(coupons)))
    # every link and coupon is in its own recipient's message, of the variant that places it
    assert {(x.variant, x.target) for x in issued} <= {("A", TARGET), ("C", OTHER)}
    assert {x.variant for x in given} <= {"A"} and {x.pool_id for x in given} <= {kit.mine}
    for x in issued:
        assert sent[x.contact_id].variant == x.variant and x.code in sent[x.contact_id].body
    for x in given:
        assert sent[x.contact_id].variant == "A" and x.code in sent[x.contact_id].body
    by_variant = done["counts"]["by_variant"]
    assert len(issued) == by_variant.get("A", 0) + by_variant.get("C", 0)
    assert len(given) == by_variant.get("A", 0)


def test_every_refusal_through_the_api(client: TestClient, runtime: Runtime, kit: Kit) -> None:
    key = make_key(runtime, kit.shop.tenant_id, Role.OPERATOR)
    named = _versions(kit)
    base = {"name": "坏", "segment": kit.shop.segment_id}
    for spec, wide, en, zh, fld in _cases(kit):
        variants = [{"template_version_id": named[t], **own} for t, own in spec]
        r = client.post(
            "/api/v1/campaigns", headers=auth(key), json={**base, "variants": variants, **wide}
        )
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "campaign_invalid", body
        assert en in body["message"]["en"] and zh in body["message"]["zh"], body
        assert body["details"]["field"] == fld
    assert _stored(runtime, kit) == (0, 0, 0)
    good = {
        **base, "name": "会员日",
        "variants": [{"template_id": kit.templates[kit.both]}, {"template_version_id": kit.plain}],
        "link_url": TARGET, "coupon_pool_id": kit.mine,
    }  # fmt: skip
    made = client.post("/api/v1/campaigns", headers=auth(key), json=good)
    assert made.status_code == 201, made.text
    assert [(v["link_url"], v["coupon_pool_id"]) for v in made.json()["variants"]] == [
        (TARGET, kit.mine), (None, None),
    ]  # fmt: skip


def test_every_refusal_through_the_cli(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from hongyan.cli.main import open_runtime

    cli("db", "upgrade")
    runtime = open_runtime()
    try:
        shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
        other = make_shop(runtime, 2, slug="other", opted_out=0, without_consent=0)
        ids = {
            name: _template_id(runtime, shop, approved_version(runtime, shop.tenant_id, body))
            for name, body in (("both", LINK_AND_COUPON), ("link", LINK_ONLY))
        }
        ids["plain"] = _template_id(runtime, shop, shop.versions[2])
        with runtime.engine.begin() as conn:
            theirs = coupon_service.create_pool(
                conn, other.tenant_id, runtime.clock.now(), name="别家的券"
            )
    finally:
        runtime.close()
    mine = cli("coupons", "create", "会员券", "--tenant", "tea")["id"]
    http = ("link_url is an http(s) address", "链接目标须为 http(s) 网址")
    cases: list[tuple[str, list[str], str, str]] = [
        ("link", [], "variant A: the template places {link}", "模板含 {link}，请填写链接目标地址"),
        ("link", ["--link-url", "ftp://shop.example/x"], *http),
        ("link", ["--link-url", "javascript:alert(1)"], *http),
        ("link", ["--link-url", "https://"], *http),
        ("link", ["--link-url", "https://shop.example/a b"], *http),
        ("link", ["--link-url", "https://s.example/" + "x" * 500], *http),
        ("both", ["--link-url", TARGET], "variant A: the template places {coupon}", "请选择优惠券池"),  # noqa: E501
        ("both", ["--link-url", TARGET, "--coupon-pool", "99999"], "no coupon pool 99999", "找不到优惠券池"),  # noqa: E501
        ("both", ["--link-url", TARGET, "--coupon-pool", str(theirs)], f"no coupon pool {theirs}", "找不到优惠券池"),  # noqa: E501
        ("plain", ["--link-url", TARGET], "no variant's template places {link}", "所选模板都不含 {link}"),  # noqa: E501
        ("plain", ["--coupon-pool", str(mine)], "no variant's template places {coupon}", "所选模板都不含 {coupon}"),  # noqa: E501
    ]  # fmt: skip
    base = ["campaigns", "create", "--tenant", "tea", "--name", "坏", "--segment", "全部"]
    for template, extra, en, zh in cases:
        refused = cli(*base, "--template", str(ids[template]), *extra, ok=False)
        err = refused["error"]
        assert err["code"] == "campaign_invalid", err
        assert en in err["message"]["en"] and zh in err["message"]["zh"], err
    assert cli("campaigns", "list", "--tenant", "tea")["campaigns"] == []
    made = cli(
        *base[:5], "会员日", *base[6:], "--template", str(ids["both"]),
        "--template", str(ids["plain"]), "--link-url", TARGET, "--coupon-pool", str(mine),
    )  # fmt: skip
    assert [(v["link_url"], v["coupon_pool_id"]) for v in made["variants"]] == [
        (TARGET, mine), (None, None),
    ]  # fmt: skip

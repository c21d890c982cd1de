"""Data rights (export, forget), consent ledger retention and the number-status check."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hongyan.clock import FixedClock
from hongyan.contacts import events, importer, number_status, retention, service, suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    audience_members,
    audit_log,
    clicks,
    consent_records,
    contact_activity,
    contact_events,
    contact_import_errors,
    contact_interests,
    contact_locations,
    contact_preferences,
    contact_tags,
    contacts,
    conversions,
    coupon_rejections,
    coupons,
    inbound_messages,
    journey_enrolments,
    links,
    messages,
    suppressions,
    webhook_deliveries,
    webhook_endpoints,
)
from hongyan.dispatch import outbox
from hongyan.dispatch.states import Lane
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.security.roles import Role

NUMBER = "+8613812345678"


def _seed(runtime: Runtime, tenant_id: int) -> None:
    data = "手机号,姓名,生日\n13812345678,李小龙,1990-05-06\n13900001111,王芳,\n".encode()
    service.import_stream(
        runtime,
        tenant_id,
        io.BytesIO(data),
        "c.csv",
        importer.ImportOptions(consent_source="shop", consent_proof="勾选同意"),
    )
    from zoneinfo import ZoneInfo

    with runtime.engine.begin() as conn:
        events.ingest(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            events.parse_batch(
                [
                    {
                        "event_id": "o1",
                        "kind": "order",
                        "phone": NUMBER,
                        "occurred_at": "2026-10-01T10:00:00",
                        "amount": "88",
                        "tags": ["茶"],
                    }
                ],
                ZoneInfo("Asia/Shanghai"),
                now=runtime.clock.now(),
            ),
        )
        outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            outbox.NewMessage(NUMBER, "【鸿雁茶饮】您好", lane=Lane.NOTIFICATION),
            max_parts=6,
        )


def test_export_then_forget(runtime: Runtime, tenant_id: int) -> None:
    _seed(runtime, tenant_id)
    with runtime.engine.begin() as conn:
        copy = service.export(conn, runtime.clock, runtime.keyring, tenant_id, "138 1234 5678", "u")
    assert copy["phone"] == NUMBER and copy["contact"]["name"] == "李小龙"
    assert copy["events"][0]["amount_fen"] == 8800 and len(copy["messages"]) == 1
    with runtime.engine.begin() as conn:
        gone = service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "user:1")
    assert (gone.events, gone.messages, gone.cancelled) == (1, 1, 1)
    scope = TenantScope(tenant_id)
    index = runtime.keyring.blind_index(NUMBER, suppression.phone_context(tenant_id))
    with runtime.engine.connect() as conn:
        assert service.find_id(conn, runtime.keyring, tenant_id, NUMBER) is None
        assert conn.execute(scope.select(contacts, sa.func.count())).scalar_one() == 1
        msg = conn.execute(scope.select(messages)).mappings().one()
        assert msg["dest_masked"] == "已删除" and msg["body"] == "已删除"
        # not sent yet: cancelled, never sent with its number and text gone
        assert (msg["state"], msg["reason"]) == ("cancelled", "suppressed")
        assert runtime.keyring.decrypt(msg["dest_cipher"], f"tenant:{tenant_id}:phone") == ""
        supp = conn.execute(scope.select(suppressions)).mappings().one()
        assert supp["phone_cipher"] is None and bytes(supp["phone_index"]) == index
        assert suppression.is_suppressed(
            conn, runtime.keyring, tenant_id, NUMBER, Lane.MARKETING, runtime.clock.now()
        )
        ledger = conn.execute(
            scope.select(consent_records)
            .where(consent_records.c.phone_index == index)
            .order_by(consent_records.c.id)
        ).mappings()
        assert [(r["purpose"], r["action"]) for r in ledger][-2:] == [
            ("marketing", "revoked"),
            ("notification", "revoked"),
        ]
        actions = [r.action for r in conn.execute(scope.select(audit_log))]
    assert actions == ["contacts.import", "contact.export", "contact.forget"]
    # Re-importing the file from before does not bring the person back: no contact, no tag,
    # no consent; the other number's row is imported as ever.
    for _ in range(2):  # (the second: every number now looked up)
        again = service.import_stream(
            runtime,
            tenant_id,
            io.BytesIO(
                "手机号,姓名,生日\n13812345678,李小龙,1990-05-06\n13700001111,赵六,\n".encode()
            ),
            "c.csv",
            importer.ImportOptions(consent_source="shop", consent_proof="x", tags=("老客",)),
        )
        assert (again.rows, again.erased, again.suppressed) == (2, 1, 0)
        assert again.imported + again.updated == 1
    with runtime.engine.connect() as conn:
        assert service.find_id(conn, runtime.keyring, tenant_id, NUMBER) is None
        assert conn.execute(scope.select(contacts, sa.func.count())).scalar_one() == 2
        ledger = conn.execute(
            scope.select(consent_records).where(consent_records.c.phone_index == index)
        ).mappings()
        assert {(r["source"], r["action"]) for r in ledger} == {("erasure", "revoked")}


def test_a_number_that_had_opted_out_is_known_as_erased_too(
    runtime: Runtime, tenant_id: int
) -> None:
    """The person had replied TD before asking to be forgotten: their opt-out becomes the
    erasure's (one entry a number and reason), so an import still leaves them out."""
    _seed(runtime, tenant_id)
    with runtime.engine.begin() as conn:
        suppression.add(
            conn, runtime.clock, runtime.keyring,
            [suppression.NewSuppression(tenant_id, NUMBER, "opt_out", "reply", "TD")],
        )  # fmt: skip
        service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    again = service.import_stream(
        runtime, tenant_id, io.BytesIO("手机号\n13812345678\n".encode()), "c.csv",
        importer.ImportOptions(),
    )  # fmt: skip
    assert (again.erased, again.imported) == (1, 0)
    with runtime.engine.connect() as conn:
        entry = conn.execute(TenantScope(tenant_id).select(suppressions)).mappings().one()
    assert (entry["reason"], entry["source"], entry["detail"]) == ("opt_out", "erasure", None)


def test_events_from_before_an_erasure_are_not_stored_again(
    runtime: Runtime, tenant_id: int, clock: FixedClock
) -> None:
    """An order feed sent again after the person was forgotten brings nothing back; an event
    after the erasure (the person came back) is stored and makes their contact anew, and an
    old one is still left out then."""
    from zoneinfo import ZoneInfo

    def post(*raw: dict[str, Any]) -> events.IngestResult:
        with runtime.engine.begin() as conn:
            return events.ingest(
                conn, runtime.clock, runtime.keyring, tenant_id,
                events.parse_batch(list(raw), ZoneInfo("Asia/Shanghai"), now=clock.now()),
            )  # fmt: skip

    _seed(runtime, tenant_id)  # the order o1 of 2026-10-01
    with runtime.engine.begin() as conn:
        service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    old = {"event_id": "o1", "kind": "order", "phone": NUMBER, "amount": "88",
           "occurred_at": "2026-10-01T10:00:00"}  # fmt: skip
    replay = post(old, {**old, "event_id": "o0", "occurred_at": "2026-09-01T10:00:00"})
    assert (replay.erased, replay.accepted, replay.duplicates, replay.contacts_created) == (
        2, 0, 0, 0
    )  # fmt: skip
    with runtime.engine.connect() as conn:
        assert service.find_id(conn, runtime.keyring, tenant_id, NUMBER) is None
        assert conn.execute(TenantScope(tenant_id).select(contact_events)).first() is None
    clock.advance(timedelta(days=2))
    back = post({"event_id": "r1", "kind": "registration", "phone": NUMBER,
                 "occurred_at": clock.now().isoformat()})  # fmt: skip
    assert (back.accepted, back.contacts_created, back.erased) == (1, 1, 0)
    assert post(old).erased == 1  # the history stays erased though the person is back
    # an erased event sent twice in a file's batch is erased twice, not a duplicate
    twice = post(old, old)
    assert (twice.erased, twice.duplicates, twice.conflicts) == (2, 0, 0)
    with runtime.engine.connect() as conn:
        kept = conn.execute(TenantScope(tenant_id).select(contact_events)).mappings().all()
    assert [e["event_id"] for e in kept] == ["r1"]


def test_refused_import_rows_are_exported_and_forgotten_by_their_number(
    runtime: Runtime, tenant_id: int
) -> None:
    """A row refused for another cell than the number (its birthday, a formula, a name too
    long) holds the person's number and name: export shows it, forget deletes it. A row whose
    number did not read as one cannot be found by a number and stays until retention."""
    data = (
        (
            "手机号,姓名,生日\n"
            "138 1234 5678,李小龙,1990-13-45\n"  # refused: the birthday
            '13812345678,=HYPERLINK("x"),\n'  # refused: a formula
            "13812345678," + "长" * 200 + ",\n"  # refused: the name
            "13900001111,王芳,not a date\n"  # another person's refused row
            "1381234567x,李小龙,\n"  # refused: the number itself
        ).encode()
    )
    done = service.import_stream(
        runtime, tenant_id, io.BytesIO(data), "c.csv", importer.ImportOptions()
    )
    assert done.invalid == 5 and done.imported == 0
    with runtime.engine.begin() as conn:
        copy = service.export(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    assert [(r["line"], r["reason"]) for r in copy["refused_import_rows"]] == [
        (2, "bad_birthday"),
        (3, "formula"),
        (4, "bad_name"),
    ]
    assert copy["refused_import_rows"][0]["cells"] == ["138 1234 5678", "李小龙", "1990-13-45"]
    with runtime.engine.begin() as conn:
        gone = service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    assert gone.refused_rows == 3
    with runtime.engine.connect() as conn:
        left = conn.execute(
            TenantScope(tenant_id)
            .select(contact_import_errors, contact_import_errors.c.line)
            .order_by(contact_import_errors.c.line)
        ).scalars()
        assert list(left) == [5, 6]


def test_export_of_an_unknown_number(runtime: Runtime, tenant_id: int) -> None:
    with runtime.engine.begin() as conn, pytest.raises(NotFound):
        service.export(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")


def _ledger(runtime: Runtime, tenant_id: int, phone: str, *records: tuple[str, str]) -> None:
    """Append (purpose, action) records for ``phone``, in order, at the clock's time."""
    with runtime.engine.begin() as conn:
        for purpose, action in records:
            service.record_consent(
                conn, runtime.clock, runtime.keyring, tenant_id, phone=phone, purpose=purpose,
                action=action, source="api", proof="p", actor="t",
            )  # fmt: skip


def test_consent_is_purged_three_years_after_revocation(
    runtime: Runtime, tenant_id: int, clock: FixedClock
) -> None:
    _ledger(runtime, tenant_id, NUMBER, ("marketing", "granted"), ("marketing", "revoked"))
    _ledger(runtime, tenant_id, "13900001111", ("marketing", "granted"))
    clock.advance(timedelta(days=3 * 365 - 5))
    assert retention.run(runtime)["consent_records"] == 0
    clock.advance(timedelta(days=10))
    assert retention.run(runtime)["consent_records"] == 2
    with runtime.engine.connect() as conn:
        left = conn.execute(TenantScope(tenant_id).select(consent_records)).mappings().all()
        assert [r["action"] for r in left] == ["granted"]  # the other number's grant stays
        assert suppression.is_suppressed(  # the revocation made an opt-out that stays
            conn, runtime.keyring, tenant_id, NUMBER, Lane.MARKETING, clock.now()
        )


def test_a_notification_revocation_outlives_the_purge(
    runtime: Runtime, tenant_id: int, clock: FixedClock
) -> None:
    """No opt-out stands for a withdrawn notification consent: the purge deletes what came
    before the revocation and keeps the revocation, so an old file imported again later does
    not grant it anew. A marketing revocation whose opt-out was lifted stays too."""
    _ledger(
        runtime, tenant_id, NUMBER, ("notification", "granted"), ("notification", "revoked"),
        ("marketing", "granted"), ("marketing", "revoked"),
    )  # fmt: skip
    with runtime.engine.begin() as conn:
        conn.execute(TenantScope(tenant_id).delete(suppressions))  # (as if lifted)
    clock.advance(timedelta(days=3 * 365 + 5))
    assert retention.run(runtime)["consent_records"] == 2  # the two grants
    service.import_stream(
        runtime, tenant_id, io.BytesIO("手机号\n13812345678\n".encode()), "c.csv",
        importer.ImportOptions(
            consent_source="old", consent_proof="x", consent_purposes=("notification",)
        ),
    )  # fmt: skip
    with runtime.engine.connect() as conn:
        left = conn.execute(
            TenantScope(tenant_id)
            .select(consent_records, consent_records.c.purpose, consent_records.c.action)
            .order_by(consent_records.c.id)
        ).all()
        assert [tuple(r) for r in left] == [("notification", "revoked"), ("marketing", "revoked")]
        index = runtime.keyring.blind_index(NUMBER, suppression.phone_context(tenant_id))
        assert service.consent_of(conn, tenant_id, index)["notification"]["action"] == "revoked"


def test_the_purge_judges_the_latest_record_as_consent_does(
    runtime: Runtime, tenant_id: int, clock: FixedClock
) -> None:
    """A revocation and a grant at the same instant: the one written last is the current
    consent (by id), so a grant written after the revocation keeps the whole ledger."""
    _ledger(runtime, tenant_id, NUMBER, ("notification", "revoked"), ("notification", "granted"))
    clock.advance(timedelta(days=4 * 365))
    assert retention.run(runtime)["consent_records"] == 0


def test_a_number_only_suppressed_is_exported(runtime: Runtime, tenant_id: int) -> None:
    """A number that is no contact but was blocked, with a note about the person: the export
    shows the entry (it said nothing was stored)."""
    with runtime.engine.begin() as conn:
        suppression.add(
            conn, runtime.clock, runtime.keyring,
            [suppression.NewSuppression(tenant_id, NUMBER, "complaint", "api", "张三电话投诉")],
        )  # fmt: skip
        copy = service.export(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    assert copy["contact"] is None
    assert [(s["reason"], s["detail"]) for s in copy["suppressions"]] == [
        ("complaint", "张三电话投诉")
    ]


def test_the_export_holds_every_interest(runtime: Runtime, tenant_id: int) -> None:
    """The contact's view shows the 20 strongest interests; the person's copy has them all."""
    from zoneinfo import ZoneInfo

    raw = [
        {"event_id": f"b{i}", "kind": "browse", "phone": NUMBER, "tags": [f"兴趣{i}"],
         "occurred_at": "2026-10-01T10:00:00"}
        for i in range(35)
    ]  # fmt: skip
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, runtime.clock, runtime.keyring, tenant_id,
            events.parse_batch(raw, ZoneInfo("Asia/Shanghai"), now=runtime.clock.now()),
        )  # fmt: skip
        cid = service.find_id(conn, runtime.keyring, tenant_id, NUMBER)
        assert cid is not None
        assert len(service.get_contact(conn, tenant_id, cid)["interests"]) == 20
        copy = service.export(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")
    interests = copy["contact"]["interests"]
    assert sorted(i["tag"] for i in interests) == sorted(f"兴趣{i}" for i in range(35))
    assert all(i["first_at"] and i["events"] == 1 for i in interests)


def test_receipt_history_finds_empty_numbers(runtime: Runtime, tenant_id: int) -> None:
    _seed(runtime, tenant_id)
    scope = TenantScope(tenant_id)
    with runtime.engine.begin() as conn:
        conn.execute(
            scope.update(messages).values(
                state="undelivered", reason="invalid_number", done_at=runtime.clock.now()
            )
        )
    summary = number_status.check_contacts(
        runtime.engine,
        runtime.clock,
        runtime.keyring,
        tenant_id,
        number_status.ReceiptHistory(runtime.engine, runtime.keyring, tenant_id),
    )
    assert summary.counts == {"active": 0, "empty": 1, "unknown": 1}
    assert summary.by_provider == {"receipts": summary.counts} and summary.failures == []
    with runtime.engine.connect() as conn:
        assert (
            suppression.is_suppressed(
                conn, runtime.keyring, tenant_id, NUMBER, Lane.NOTIFICATION, runtime.clock.now()
            )
            == "invalid"
        )


def test_forget_and_retention_remove_memberships(runtime: Runtime, tenant_id: int) -> None:
    """audience_members has no foreign key to cascade: forget deletes the contact's memberships,
    and the retention run deletes those a snapshot wrote for a contact erased meanwhile."""
    from hongyan.audience import segments

    _seed(runtime, tenant_id)
    scope = TenantScope(tenant_id)
    rule = {"field": "country", "op": "eq", "value": "CN"}
    with runtime.engine.begin() as conn:
        aud = segments.snapshot(conn, runtime.clock, tenant_id, rule=rule, actor="t")
        other = service.find_id(conn, runtime.keyring, tenant_id, "+8613900001111")
    with runtime.engine.connect() as conn:
        members = conn.execute(scope.select(audience_members, audience_members.c.contact_id))
        assert len(members.all()) == 2
    with runtime.engine.begin() as conn:
        gone = service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "user:1")
        # What a snapshot racing the erasure leaves: a membership of a contact that is gone.
        conn.execute(
            scope.insert(audience_members).values(
                audience_id=aud["id"], contact_id=gone.contact_id + 1000, phone_index=b"x" * 32,
                status="included",
            )
        )  # fmt: skip
    with runtime.engine.connect() as conn:
        left = conn.execute(scope.select(audience_members, audience_members.c.contact_id))
        assert sorted(r[0] for r in left) == sorted([other, gone.contact_id + 1000])
    assert retention.run(runtime)["orphan_members"] == 1
    assert retention.run(runtime)["orphan_members"] == 0
    with runtime.engine.connect() as conn:
        left = conn.execute(scope.select(audience_members, audience_members.c.contact_id))
        assert [r[0] for r in left] == [other]


# -- a person with everything: campaign, link, click, coupon, order, journey, reply ---------------

ME = "+8613812345678"
NAME = "李小龙"
PERSON_UA = "Mozilla/5.0 (iPhone) Mobile MicroMessenger/8.0"
IPS = ("203.0.113.7", "203.0.113.8")
TARGET = "https://shop.example/cart?from=sms"


@dataclass
class World:
    tenant_id: int
    campaign_id: int
    journey_id: int
    me: int  # the person's contact id
    other: int  # another recipient's
    code: str  # the person's link code
    coupon: str  # the person's coupon code


def _build(client: TestClient, runtime: Runtime) -> World:
    """The person through the platform's own services: imported with consent (then granted
    twice more with an IP), sent a campaign whose text names them with their own link and
    coupon, delivered; clicks twice (another recipient once), orders with the coupon and later
    names it again (refused: used); has a preference, a location, an active journey enrolment,
    a reply (delivered to a webhook) and is in the campaign's audience."""
    from hongyan.audience import recompute
    from hongyan.campaigns import caps, journeys
    from hongyan.campaigns import service as campaigns
    from hongyan.channels.base import ChannelSpec, Inbound
    from hongyan.dispatch.replies import apply_inbound
    from hongyan.tracking import coupons as coupon_service
    from tests.campaigns.support import make_shop
    from tests.campaigns.test_journey_links import LINK_AND_COUPON
    from tests.campaigns.test_journeys import _template_id
    from tests.content.support import approved_version

    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    tid = shop.tenant_id
    scope = TenantScope(tid)
    service.import_stream(
        runtime, tid, io.BytesIO(f"手机号,姓名,城市\n{ME[3:]},{NAME},杭州\n".encode()), "p.csv",
        importer.ImportOptions(consent_source="shop", consent_proof="勾选同意"),
    )  # fmt: skip
    version = approved_version(runtime, tid, LINK_AND_COUPON)
    with runtime.engine.begin() as conn:
        for purpose, ip in (("marketing", IPS[0]), ("notification", IPS[1])):
            service.record_consent(
                conn, clock, runtime.keyring, tid, phone=ME, purpose=purpose, action="granted",
                source="小程序", proof="授权弹窗 v3", actor="api", ip=ip,
            )  # fmt: skip
        me = service.find_id(conn, runtime.keyring, tid, ME)
        other = service.find_id(conn, runtime.keyring, tid, shop.phones[0])
        assert me is not None and other is not None
        pool = coupon_service.create_pool(conn, tid, clock.now(), name="会员券")
        caps.set_preference(conn, clock, tid, me, "weekly", "page")
        recompute.recompute_locations(conn, clock, tid)
        camp = campaigns.create(
            conn, clock, runtime.keyring, tid, name="会员日", segment=shop.segment_id,
            variants=[{"template_version_id": version, "link_url": TARGET,
                       "coupon_pool_id": pool}],
            actor="t",
        )  # fmt: skip
        campaigns.launch(conn, clock, runtime.keyring, tid, camp["id"], actor="t")
        conn.execute(
            scope.update(messages)
            .where(messages.c.campaign_id == camp["id"])
            .values(state="delivered", submitted_at=clock.now(), done_at=clock.now())
        )
        conn.execute(
            scope.insert(webhook_endpoints).values(
                url="http://127.0.0.1:9/hook", events=["*"], active=True, created_at=clock.now(),
                secret_cipher=runtime.keyring.encrypt("whsec", f"tenant:{tid}:webhook"),
            )
        )  # fmt: skip
        mine = conn.execute(scope.select(messages).where(messages.c.contact_id == me)).one()
        code = conn.execute(
            scope.select(links, links.c.code).where(links.c.contact_id == me)
        ).scalar_one()
        theirs = conn.execute(
            scope.select(links, links.c.code).where(links.c.contact_id == other)
        ).scalar_one()
        coupon = conn.execute(
            scope.select(coupons, coupons.c.code).where(coupons.c.contact_id == me)
        ).scalar_one()
    assert NAME in mine.body and code in mine.body and coupon in mine.body
    clock.advance(timedelta(minutes=17))  # clicks off the hour
    for c in (code, code, theirs):
        r = client.get(f"/{c}", headers={"user-agent": PERSON_UA}, follow_redirects=False)
        assert r.status_code == 302
    clock.advance(timedelta(hours=1, minutes=3))
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, clock, runtime.keyring, tid,
            [
                events.Event("o-1", "order", ME, clock.now(), order_id="o-1", amount_fen=19900,
                             coupon_code=coupon),
                events.Event("o-9", "order", shop.phones[0], clock.now(), order_id="o-9",
                             amount_fen=5000),
            ],
        )  # fmt: skip
        # The coupon named again on an order from before the clicks: refused (used), and no
        # click before it converts it.
        events.ingest(
            conn, clock, runtime.keyring, tid,
            [events.Event("o-2", "order", ME, clock.now() - timedelta(days=1), order_id="o-2",
                          amount_fen=1200, coupon_code=coupon)],
        )  # fmt: skip
        tpl = _template_id(runtime, shop, shop.versions[2])
        journey = journeys.create(
            conn, clock, tid, actor="t", name="加购", trigger="add_to_cart",
            steps=[{"kind": "wait", "minutes": 60}, {"kind": "send", "template_id": tpl}],
        )  # fmt: skip
    clock.advance(timedelta(minutes=1))
    with runtime.engine.begin() as conn:
        events.ingest(
            conn, clock, runtime.keyring, tid,
            [events.Event("cart-1", "add_to_cart", ME, clock.now(), tags=["茶"])],
        )  # fmt: skip
        spec = ChannelSpec(name="sb", kind="smpp", config={"source_addr": "10690"})
        [got] = apply_inbound(
            conn, clock, runtime.keyring, spec, [Inbound(ME, "10690", f"收到，我是{NAME}")]
        )
    assert got["tenant_id"] == tid and got["kind"] == "reply"
    return World(tid, camp["id"], journey["id"], me, other, code, coupon)


def _figures(runtime: Runtime, w: World) -> dict[str, Any]:
    """What the tenant's reports say about the campaign and the journey."""
    from hongyan.campaigns import journeys
    from hongyan.reports.campaigns import campaign_report
    from hongyan.tracking import metrics

    with runtime.engine.begin() as conn:
        return {
            "report": campaign_report(conn, w.tenant_id, w.campaign_id),
            "clicked": metrics.click_counts(conn, w.tenant_id, w.campaign_id),
            "converted": metrics.conversion_counts(conn, w.tenant_id, w.campaign_id),
            "entered": journeys.counts(conn, w.tenant_id, w.journey_id)["entered"],
        }


def test_export_and_forget_reach_every_table(client: TestClient, runtime: Runtime) -> None:
    from tests.api.test_api import auth
    from tests.reports.support import make_key

    w = _build(client, runtime)
    tid, scope = w.tenant_id, TenantScope(w.tenant_id)
    before = _figures(runtime, w)
    totals = before["report"]["totals"]
    assert (totals["clicks_total"], totals["clicks_unique"]) == (3, 2)
    assert (totals["conversions"], totals["revenue_fen"]) == (2, 24900)
    assert before["entered"] == 1

    # -- the export, as the API gives it ------------------------------------------------------
    key = make_key(runtime, tid, Role.OPERATOR)
    r = client.post("/api/v1/contacts/export", headers=auth(key), json={"phone": ME[3:]})
    assert r.status_code == 200, r.text
    copy = r.json()
    assert copy["phone"] == ME and copy["contact"]["name"] == NAME
    assert sorted(e["event_id"] for e in copy["events"]) == ["cart-1", "o-1", "o-2"]
    assert copy["preferences"]["frequency"] == "weekly"
    assert copy["location"]["source"] == "city" and copy["location"]["place"]
    assert [a["status"] for a in copy["audiences"]] == ["included"]
    [enrolment] = copy["journeys"]
    assert (enrolment["journey"], enrolment["state"], enrolment["event_key"]) == (
        "加购", "active", "cart-1",
    )  # fmt: skip
    [link] = copy["links"]
    assert (link["code"], link["target"], link["campaign_id"]) == (w.code, TARGET, w.campaign_id)
    assert len(copy["clicks"]) == 2
    assert all(c["user_agent"] == PERSON_UA and c["ip_hash"] for c in copy["clicks"])
    [coupon] = copy["coupons"]
    assert (coupon["code"], coupon["state"], coupon["pool"]) == (w.coupon, "redeemed", "会员券")
    assert coupon["order_key"] == "o-1"
    [conv] = copy["conversions"]
    assert (conv["order_key"], conv["method"], conv["amount_fen"]) == ("o-1", "coupon", 19900)
    assert [(x["order_key"], x["reason"]) for x in copy["coupon_rejections"]] == [("o-2", "used")]
    assert {x["ip"] for x in copy["consent_records"]} >= set(IPS)
    [sent] = copy["messages"]
    assert NAME in sent["body"] and w.code in sent["body"]
    [reply] = copy["replies"]
    assert reply["text"] == f"收到，我是{NAME}" and reply["kind"] == "reply"

    # -- forget ---------------------------------------------------------------------------------
    with runtime.engine.begin() as conn:
        gone = service.forget(conn, runtime.clock, runtime.keyring, tid, ME, "user:1")
    assert gone.contact_id == w.me
    assert (gone.messages, gone.replies, gone.links, gone.clicks) == (1, 1, 1, 2)
    assert (gone.coupons, gone.conversions, gone.enrolments) == (1, 1, 1)
    assert gone.consent_records == 3  # the import's grant and the two with an IP

    index = runtime.keyring.blind_index(ME, suppression.phone_context(tid))
    by_contact = (
        contacts.c.id, contact_events.c.contact_id, contact_tags.c.contact_id,
        contact_activity.c.contact_id, contact_interests.c.contact_id,
        contact_preferences.c.contact_id, contact_locations.c.contact_id,
        audience_members.c.contact_id, journey_enrolments.c.contact_id, messages.c.contact_id,
        links.c.contact_id, clicks.c.contact_id, coupons.c.contact_id, conversions.c.contact_id,
    )  # fmt: skip
    with runtime.engine.connect() as conn:
        for col in by_contact:
            n = conn.execute(scope.select(col.table, sa.func.count()).where(col == w.me))
            assert n.scalar_one() == 0, f"{col.table.name} still names the contact"
        bodies = [m.body for m in conn.execute(scope.select(messages))]
        assert not any(NAME in b for b in bodies) and sum(b == "已删除" for b in bodies) == 1
        assert sum("李0" in b for b in bodies) == 1  # the others' texts stay
        ledger = conn.execute(scope.select(consent_records)).mappings().all()
        mine = [r for r in ledger if bytes(r["phone_index"]) == index]
        assert [(r["action"], r["source"], r["ip"]) for r in mine] == [
            ("revoked", "erasure", None),
            ("revoked", "erasure", None),
        ]
        assert not any(r["ip"] for r in ledger)
        assert conn.execute(scope.select(inbound_messages, sa.func.count())).scalar_one() == 0
        payloads = [
            json.dumps(d.payload, ensure_ascii=False)
            for d in conn.execute(scope.select(webhook_deliveries))
        ]
        assert payloads and not any(NAME in p or "138****5678" in p for p in payloads)
        for c in conn.execute(scope.select(clicks).where(clicks.c.contact_id.is_(None))):
            assert (c.ip_hash, c.user_agent, c.at.minute, c.at.second) == (None, "", 0, 0)
        assert conn.execute(scope.select(clicks).where(clicks.c.contact_id == w.other)).one()
        assert not conn.execute(scope.select(links).where(links.c.code == w.code)).one().contact_id
        codes = [c.code for c in conn.execute(scope.select(coupons))]
        assert w.coupon not in codes and sum(c.startswith("已删除:") for c in codes) == 1
        convs = conn.execute(scope.select(conversions).order_by(conversions.c.id)).all()
        assert [(c.order_key.startswith("已删除:"), c.contact_id, c.amount_fen) for c in convs] == [
            (True, None, 19900),
            (False, w.other, 5000),
        ]
        unlinked = convs[0]
        assert unlinked.event_id == "已删除" and unlinked.ordered_at.hour == 0
        assert conn.execute(scope.select(coupon_rejections, sa.func.count())).scalar_one() == 0
        [e] = conn.execute(scope.select(journey_enrolments)).all()
        assert (e.contact_id, e.event_key, e.state, e.outcome) == (
            None,
            "已删除",
            "exited",
            "erased",
        )
        # no text column of any of these holds the number, the name or the order ids
        for table in (messages, links, clicks, coupons, conversions, journey_enrolments):
            for row in conn.execute(scope.select(table)).mappings():
                text = " ".join(str(v) for v in row.values())
                assert NAME not in text and "o-1" not in text and ME[3:] not in text
    # -- what the tenant's reports say is unchanged ------------------------------------------
    after = _figures(runtime, w)
    assert after == before
    # Exported again: nothing but the erasure's own records.
    with runtime.engine.begin() as conn:
        left = service.export(conn, runtime.clock, runtime.keyring, tid, ME, "u")
    assert left["contact"] is None and left["replies"] == [] and left["links"] == []
    assert [r["source"] for r in left["consent_records"]] == ["erasure", "erasure"]
    assert [m["body"] for m in left["messages"]] == ["已删除"]


def test_retention_unlinks_clicks_of_erased_contacts(runtime: Runtime, tenant_id: int) -> None:
    """A redirector's cached link still names a contact erased since: the retention run unlinks
    such a click as forget would."""
    from hongyan.tracking.clicks import store_rows
    from tests.tracking.support import click_row

    _seed(runtime, tenant_id)
    now = runtime.clock.now().replace(minute=41)
    with runtime.engine.begin() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, NUMBER)
        assert cid is not None
        service.forget(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "user:1")
    late = click_row(link_id=1, campaign_id=1, variant="A", contact_id=cid, at=now,
                     ip_hash=b"h" * 16, user_agent=PERSON_UA)  # fmt: skip
    store_rows(runtime.engine, [(tenant_id, late)])
    assert retention.run(runtime)["orphan_clicks"] == 1
    assert retention.run(runtime)["orphan_clicks"] == 0
    with runtime.engine.connect() as conn:
        c = conn.execute(TenantScope(tenant_id).select(clicks)).one()
    assert (c.contact_id, c.ip_hash, c.user_agent, c.at.minute, c.link_id) == (None, None, "", 0, 1)

"""Data rights (export, forget), consent ledger retention and the number-status check."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hongyan.clock import FixedClock
from hongyan.contacts import events, importer, number_status, retention, service, suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    audience_members,
    audit_log,
    consent_records,
    contacts,
    messages,
    suppressions,
)
from hongyan.dispatch import outbox
from hongyan.dispatch.states import Lane
from hongyan.errors import NotFound
from hongyan.runtime import Runtime

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
    assert (gone.events, gone.messages) == (1, 1)
    scope = TenantScope(tenant_id)
    index = runtime.keyring.blind_index(NUMBER, suppression.phone_context(tenant_id))
    with runtime.engine.connect() as conn:
        assert service.find_id(conn, runtime.keyring, tenant_id, NUMBER) is None
        assert conn.execute(scope.select(contacts, sa.func.count())).scalar_one() == 1
        msg = conn.execute(scope.select(messages)).mappings().one()
        assert msg["dest_masked"] == "已删除"
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
    # Re-importing the number does not revive it: no consent is granted again.
    again = service.import_stream(
        runtime,
        tenant_id,
        io.BytesIO("手机号\n13812345678\n".encode()),
        "c.csv",
        importer.ImportOptions(consent_source="shop", consent_proof="x"),
    )
    assert again.suppressed == 1


def test_export_of_an_unknown_number(runtime: Runtime, tenant_id: int) -> None:
    with runtime.engine.begin() as conn, pytest.raises(NotFound):
        service.export(conn, runtime.clock, runtime.keyring, tenant_id, NUMBER, "u")


def test_consent_is_purged_three_years_after_revocation(
    runtime: Runtime, tenant_id: int, clock: FixedClock
) -> None:
    with runtime.engine.begin() as conn:
        for action in ("granted", "revoked"):
            service.record_consent(
                conn, clock, runtime.keyring, tenant_id, phone=NUMBER, purpose="marketing",
                action=action, source="api", proof="p", actor="t",
            )  # fmt: skip
        service.record_consent(
            conn, clock, runtime.keyring, tenant_id, phone="13900001111", purpose="marketing",
            action="granted", source="api", proof="p", actor="t",
        )  # fmt: skip
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

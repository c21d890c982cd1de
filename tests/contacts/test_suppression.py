"""The suppression list and the consent ledger (both databases), and ``stops`` (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.clock import FixedClock
from hongyan.contacts import suppression
from hongyan.contacts.suppression import (
    INVALID_FOR,
    REASONS,
    SCOPE_OF,
    ConsentChange,
    NewSuppression,
    phone_context,
    stops,
)
from hongyan.db.scope import TenantScope
from hongyan.db.tables import consent_records, suppressions
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane
from hongyan.errors import ValidationFailed
from hongyan.runtime import Runtime
from hongyan.tenants.service import create_tenant

ME = "+8613812345678"
OTHER = "+8613987654321"

# -- stops (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lane", list(Lane))
@pytest.mark.parametrize("scope", ["all", "marketing", "notification", "", "ALL"])
def test_stops_for_every_scope_and_lane(scope: str, lane: Lane) -> None:
    expected = scope == "all" or (scope == "marketing" and lane is Lane.MARKETING)
    assert stops(scope, lane) is expected


def test_what_each_reason_stops() -> None:
    assert set(SCOPE_OF) == set(REASONS)
    table = {reason: {lane: stops(SCOPE_OF[reason], lane) for lane in Lane} for reason in REASONS}
    everything = {Lane.VERIFICATION: True, Lane.NOTIFICATION: True, Lane.MARKETING: True}
    marketing = {Lane.VERIFICATION: False, Lane.NOTIFICATION: False, Lane.MARKETING: True}
    assert table == {
        "opt_out": marketing,
        "invalid": everything,
        "complaint": marketing,
        "manual": everything,
    }


# -- storage --------------------------------------------------------------------------------------


def tenant(runtime: Runtime, slug: str) -> int:
    with runtime.engine.begin() as conn:
        return create_tenant(conn, runtime.clock, slug=slug, name=slug).id


def add(runtime: Runtime, *items: NewSuppression) -> int:
    with runtime.engine.begin() as conn:
        return suppression.add(conn, runtime.clock, runtime.keyring, list(items))


def blocked(runtime: Runtime, tenant_id: int, phone: str, lane: Lane) -> str | None:
    with runtime.engine.connect() as conn:
        return suppression.is_suppressed(
            conn, runtime.keyring, tenant_id, phone, lane, runtime.clock.now()
        )


def lookup(runtime: Runtime, *pairs: tuple[int, str]) -> dict[tuple[int, str], set[str]]:
    keyed = {(t, runtime.keyring.blind_index(p, phone_context(t))): (t, p) for t, p in pairs}
    with runtime.engine.connect() as conn:
        found = suppression.lookup(conn, keyed, runtime.clock.now())
    return {keyed[k]: v for k, v in found.items()}


def stored(runtime: Runtime, tenant_id: int, table: sa.Table = suppressions) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(TenantScope(tenant_id).select(table).order_by(table.c.id)))


def test_each_reason_blocks_its_lanes(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    numbers = {r: f"+86138000000{i:02d}" for i, r in enumerate(REASONS)}
    add(runtime, *(NewSuppression(t, numbers[r], r, "test") for r in REASONS))
    for reason, phone in numbers.items():
        for lane in Lane:
            want = reason if stops(SCOPE_OF[reason], lane) else None
            assert blocked(runtime, t, phone, lane) == want, (reason, lane)
    assert lookup(runtime, *((t, p) for p in numbers.values()), (t, OTHER)) == {
        (t, numbers[r]): {SCOPE_OF[r]} for r in REASONS
    }
    for lane in Lane:
        assert blocked(runtime, t, OTHER, lane) is None


def test_rows_are_encrypted_masked_and_indexed(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    add(runtime, NewSuppression(t, ME, "manual", "console", "asked by phone"))
    [row] = stored(runtime, t)
    assert (row.reason, row.scope, row.source, row.detail, row.phone_masked) == (
        "manual",
        "all",
        "console",
        "asked by phone",
        "138****5678",
    )
    assert row.created_at == runtime.clock.now() and row.expires_at is None
    assert b"13812345678" not in bytes(row.phone_cipher)
    assert runtime.keyring.decrypt(bytes(row.phone_cipher), phone_context(t)) == ME
    assert bytes(row.phone_index) == runtime.keyring.blind_index(ME, phone_context(t))
    # The listing shows neither the ciphertext nor the index.
    with runtime.engine.connect() as conn:
        [listed] = suppression.list_for(conn, t)
    assert "phone_cipher" not in listed and "phone_index" not in listed
    assert listed["phone_masked"] == "138****5678"


def test_add_is_idempotent_per_number_and_reason(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    first = add(runtime, NewSuppression(t, ME, "opt_out", "reply", "TD"))
    again = add(
        runtime,
        NewSuppression(t, ME, "opt_out", "reply", "退订"),
        NewSuppression(t, ME, "opt_out", "api"),  # twice in one batch as well
    )
    other_reason = add(runtime, NewSuppression(t, ME, "complaint", "console"))
    rows = stored(runtime, t)
    assert [(r.reason, r.detail) for r in rows] == [("opt_out", "TD"), ("complaint", None)]
    assert (first, again, other_reason) == (1, 0, 1)
    mixed = add(
        runtime,
        NewSuppression(t, ME, "complaint", "console"),
        NewSuppression(t, OTHER, "complaint", "console"),
    )
    assert mixed == 1 and len(stored(runtime, t)) == 3


def test_a_suppression_belongs_to_its_tenant(runtime: Runtime) -> None:
    a = tenant(runtime, "tea")
    b = tenant(runtime, "noodle")
    add(runtime, NewSuppression(a, ME, "manual", "console"))
    assert blocked(runtime, a, ME, Lane.VERIFICATION) == "manual"
    assert blocked(runtime, b, ME, Lane.VERIFICATION) is None
    assert lookup(runtime, (a, ME), (b, ME)) == {(a, ME): {"all"}}
    assert stored(runtime, b) == []
    # The same number suppressed in B too is a row of B's own.
    add(runtime, NewSuppression(b, ME, "manual", "console"))
    assert len(stored(runtime, a)) == len(stored(runtime, b)) == 1
    assert stored(runtime, a)[0].phone_index != stored(runtime, b)[0].phone_index


def test_invalid_expires_after_180_days(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    t = tenant(runtime, "tea")
    add(
        runtime,
        NewSuppression(t, ME, "invalid", "receipt"),
        NewSuppression(t, OTHER, "opt_out", "reply"),
    )
    [row, _] = stored(runtime, t)
    assert row.expires_at == clock.now() + INVALID_FOR
    assert timedelta(days=180) == INVALID_FOR
    clock.advance(INVALID_FOR - timedelta(seconds=1))
    assert blocked(runtime, t, ME, Lane.NOTIFICATION) == "invalid"
    assert lookup(runtime, (t, ME)) == {(t, ME): {"all"}}
    clock.advance(timedelta(seconds=1))
    assert blocked(runtime, t, ME, Lane.NOTIFICATION) is None
    assert blocked(runtime, t, ME, Lane.MARKETING) is None
    assert lookup(runtime, (t, ME), (t, OTHER)) == {(t, OTHER): {"marketing"}}
    # An opt-out never expires.
    clock.advance(timedelta(days=3650))
    assert blocked(runtime, t, OTHER, Lane.MARKETING) == "opt_out"


def test_an_invalid_number_found_invalid_again_after_expiry_is_suppressed_again(
    runtime: Runtime,
) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    t = tenant(runtime, "tea")
    add(runtime, NewSuppression(t, ME, "invalid", "receipt", "first"))
    clock.advance(timedelta(days=200))
    assert blocked(runtime, t, ME, Lane.NOTIFICATION) is None  # one more try may be made …
    add(runtime, NewSuppression(t, ME, "invalid", "receipt", "second"))  # … and it was 空号 again
    assert blocked(runtime, t, ME, Lane.NOTIFICATION) == "invalid"
    [row] = stored(runtime, t)
    assert row.detail == "second" and row.expires_at == clock.now() + INVALID_FOR
    # While a verdict is live, a repeat changes nothing (its expiry is not pushed back).
    clock.advance(timedelta(days=1))
    add(runtime, NewSuppression(t, ME, "invalid", "receipt", "third"))
    [row] = stored(runtime, t)
    assert row.detail == "second"


def test_an_unknown_reason_is_refused_and_nothing_is_written(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    with pytest.raises(ValidationFailed) as info:
        add(
            runtime,
            NewSuppression(t, ME, "opt_out", "reply"),
            NewSuppression(t, OTHER, "spam", "console"),
        )
    assert "spam" in info.value.message_en and "spam" in info.value.message_zh
    assert stored(runtime, t) == []


def test_lookup_spans_tenants_and_large_batches(runtime: Runtime) -> None:
    a = tenant(runtime, "tea")
    b = tenant(runtime, "noodle")
    add(
        runtime,
        NewSuppression(a, ME, "opt_out", "reply"),
        NewSuppression(a, ME, "manual", "console"),
        NewSuppression(b, OTHER, "invalid", "receipt"),
    )
    pairs = [(t, f"+86150{i:08d}") for i in range(700) for t in (a, b)]
    found = lookup(runtime, *pairs, (a, ME), (b, ME), (a, OTHER), (b, OTHER))
    assert found == {(a, ME): {"marketing", "all"}, (b, OTHER): {"all"}}
    with runtime.engine.connect() as conn:
        assert suppression.lookup(conn, [], runtime.clock.now()) == {}


def test_list_for_is_newest_first_and_limited(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    t = tenant(runtime, "tea")
    for i in range(5):
        add(runtime, NewSuppression(t, f"+8613800000{i:03d}", "manual", "console", str(i)))
        clock.advance(timedelta(minutes=1))
    with runtime.engine.connect() as conn:
        assert [r["detail"] for r in suppression.list_for(conn, t)] == ["4", "3", "2", "1", "0"]
        assert [r["detail"] for r in suppression.list_for(conn, t, limit=2)] == ["4", "3"]


def test_a_trailing_newline_does_not_dodge_the_list(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    add(runtime, NewSuppression(t, ME, "manual", "console"))
    for to in (ME, ME + "\n"):
        with pytest.raises(ValidationFailed), runtime.engine.begin() as conn:
            outbox.enqueue(
                conn, runtime.clock, runtime.keyring, t, NewMessage(to, "hi"), max_parts=6
            )


# -- the consent ledger ---------------------------------------------------------------------------


def consent(runtime: Runtime, *changes: ConsentChange) -> None:
    with runtime.engine.begin() as conn:
        suppression.record_consent(conn, runtime.clock, runtime.keyring, list(changes))


def current(runtime: Runtime, t: int, phone: str, purpose: str = "marketing") -> Any:
    with runtime.engine.connect() as conn:
        return suppression.current_consent(conn, runtime.keyring, t, phone, purpose)


def change(t: int, action: str, *, phone: str = ME, purpose: str = "marketing", **kw: Any):
    values = {"source": "web form", "proof": "checkbox v2", "actor": "recipient", **kw}
    return ConsentChange(t, phone, purpose, action, **values)


def test_the_ledger_is_append_only_and_current_is_the_latest(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    t = tenant(runtime, "tea")
    assert current(runtime, t, ME) is None
    consent(runtime, change(t, "granted", ip="192.0.2.1"))
    first = stored(runtime, t, consent_records)
    clock.advance(timedelta(days=1))
    consent(runtime, change(t, "revoked", source="reply", proof="TD"))
    assert current(runtime, t, ME)["action"] == "revoked"
    clock.advance(timedelta(days=1))
    consent(runtime, change(t, "granted", source="api", proof="order 42", actor="api-key 7"))
    latest = current(runtime, t, ME)
    assert (latest["action"], latest["source"], latest["proof"], latest["actor"]) == (
        "granted",
        "api",
        "order 42",
        "api-key 7",
    )
    assert latest["at"] == clock.now()
    rows = stored(runtime, t, consent_records)
    assert [r.action for r in rows] == ["granted", "revoked", "granted"]
    assert rows[0] == first[0]  # earlier records are never rewritten
    assert rows[0].ip == "192.0.2.1"


def test_records_at_the_same_instant_are_ordered_by_insertion(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    consent(runtime, change(t, "granted"), change(t, "revoked"))
    assert current(runtime, t, ME)["action"] == "revoked"
    consent(runtime, change(t, "granted"))
    assert current(runtime, t, ME)["action"] == "granted"


def test_consent_is_per_purpose_number_and_tenant(runtime: Runtime) -> None:
    a = tenant(runtime, "tea")
    b = tenant(runtime, "noodle")
    consent(
        runtime,
        change(a, "revoked"),
        change(a, "granted", purpose="notification"),
        change(b, "granted"),
        change(a, "granted", phone=OTHER),
    )
    assert current(runtime, a, ME)["action"] == "revoked"
    assert current(runtime, a, ME, "notification")["action"] == "granted"
    assert current(runtime, b, ME)["action"] == "granted"
    assert current(runtime, b, ME, "notification") is None
    assert current(runtime, a, OTHER)["action"] == "granted"
    assert len(stored(runtime, a, consent_records)) == 3
    assert len(stored(runtime, b, consent_records)) == 1


def test_a_bad_purpose_or_action_is_refused_and_nothing_is_written(runtime: Runtime) -> None:
    t = tenant(runtime, "tea")
    for purpose, action in [("sales", "granted"), ("marketing", "maybe"), ("", "revoked")]:
        with pytest.raises(ValidationFailed):
            consent(runtime, change(t, "granted"), change(t, action, purpose=purpose))
    assert stored(runtime, t, consent_records) == []

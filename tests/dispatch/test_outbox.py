"""The outbox on both backends: enqueue, idempotency, lane order, leases, disjoint claims."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hongyan.clock import FixedClock
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane, State
from hongyan.errors import HongyanError, NotFound, ValidationFailed
from hongyan.runtime import Runtime
from hongyan.tenants import service
from tests.content.support import approved_version

LEASE = timedelta(seconds=30)


def _tenant(runtime: Runtime, slug: str = "tea") -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug=slug, name=slug).id


def _put(runtime: Runtime, tenant: int, new: NewMessage, max_parts: int = 6) -> tuple[int, bool]:
    with runtime.engine.begin() as conn:
        return outbox.enqueue(
            conn, runtime.clock, runtime.keyring, tenant, new, max_parts=max_parts
        )


def test_enqueue_stores_plan_and_masks(runtime: Runtime) -> None:
    t = _tenant(runtime)
    mid, created = _put(runtime, t, NewMessage("+8613812345678", "【鸿雁茶饮】您的订单已发货" * 6))
    assert created
    with runtime.engine.connect() as conn:
        msg = outbox.get(conn, t, mid)
    assert msg["dest_masked"] == "138****5678" and msg["encoding"] == "ucs2"
    assert msg["parts"] == 2 and msg["state"] == "planned"
    assert "dest_cipher" not in msg
    assert msg["expires_at"] - msg["due_at"] == timedelta(hours=24)
    # The number's carrier and place, as a contact of that number would have them.
    place = (msg["carrier"], msg["number_province"], msg["number_city"])
    assert place == ("cmcc", "江苏", "连云港")
    mid, _ = _put(runtime, t, NewMessage("+14155550100", "Your order has shipped"))
    with runtime.engine.connect() as conn:
        msg = outbox.get(conn, t, mid)
    assert (msg["carrier"], msg["number_province"], msg["number_city"]) == ("intl", None, None)


@pytest.mark.parametrize("to", ["13812345678", "+86 138", "+0123456789", "", "+86138123456789012"])
def test_bad_numbers_are_refused_and_nothing_is_stored(runtime: Runtime, to: str) -> None:
    t = _tenant(runtime)
    with pytest.raises(ValidationFailed) as err:
        _put(runtime, t, NewMessage(to, "hello"))
    assert err.value.code == "invalid_number"
    with runtime.engine.connect() as conn:
        assert (
            conn.execute(unscoped(sa.select(sa.func.count()).select_from(messages), "t")).scalar()
            == 0
        )


def test_empty_and_too_long_texts(runtime: Runtime) -> None:
    t = _tenant(runtime)
    with pytest.raises(ValidationFailed):
        _put(runtime, t, NewMessage("+8613812345678", ""))
    with pytest.raises(ValidationFailed) as err:
        _put(runtime, t, NewMessage("+8613812345678", "长" * 68 * 3), max_parts=2)
    assert err.value.code == "text_too_long"


def test_idempotency(runtime: Runtime) -> None:
    t = _tenant(runtime)
    other = _tenant(runtime, "other")
    first = _put(runtime, t, NewMessage("+8613812345678", "code 1234", idempotency_key="k1"))
    again = _put(runtime, t, NewMessage("+8613812345678", "code 1234", idempotency_key="k1"))
    assert first[1] and not again[1] and first[0] == again[0]
    with pytest.raises(HongyanError) as err:
        _put(runtime, t, NewMessage("+8613812345678", "code 9999", idempotency_key="k1"))
    assert err.value.code == "idempotency_conflict"
    # Keys are per tenant.
    assert _put(runtime, other, NewMessage("+8613812345678", "code 1234", idempotency_key="k1"))[1]


def test_claim_order_lease_and_reclaim(runtime: Runtime, clock: FixedClock) -> None:
    t = _tenant(runtime)
    ids = {}
    promo = "【鸿雁茶饮】第二杯半价，今晚21点前有效，回T退订"
    approved = approved_version(runtime, t, promo)  # marketing needs an approved template
    for lane in (Lane.MARKETING, Lane.NOTIFICATION, Lane.VERIFICATION):
        if lane is Lane.MARKETING:
            new = NewMessage("+8613812345678", promo, lane=lane, template_version_id=approved)
        else:
            new = NewMessage("+8613812345678", lane.name, lane=lane)
        ids[lane] = _put(runtime, t, new)[0]
    later = _put(
        runtime, t, NewMessage("+8613812345678", "later", due_at=clock.now() + timedelta(hours=1))
    )[0]
    with runtime.engine.begin() as conn:
        got = outbox.claim(conn, clock, owner="d1", limit=2, lease=LEASE)
    assert [c.id for c in got] == [ids[Lane.VERIFICATION], ids[Lane.NOTIFICATION]]
    assert all(c.attempts == 1 for c in got)
    with runtime.engine.begin() as conn:
        rest = outbox.claim(conn, clock, owner="d2", limit=10, lease=LEASE)
    assert [c.id for c in rest] == [ids[Lane.MARKETING]]  # "later" is not due, leased ones held
    clock.advance(LEASE + timedelta(seconds=1))
    with runtime.engine.begin() as conn:
        again = outbox.claim(conn, clock, owner="d3", limit=10, lease=LEASE)
    assert sorted(c.id for c in again) == sorted(ids.values())
    assert all(c.attempts == 2 for c in again)
    assert later not in {c.id for c in again}
    # The dead dispatcher's late write is refused; the lease holder's is accepted.
    vid = ids[Lane.VERIFICATION]
    with runtime.engine.begin() as conn:
        assert not outbox.move(conn, vid, State.SENDING, State.SUBMITTED, owner="d1")
        assert outbox.move(conn, vid, State.SENDING, State.SUBMITTED, owner="d3")
        assert outbox.get(conn, t, vid)["state"] == "submitted"


def test_get_is_tenant_scoped(runtime: Runtime) -> None:
    a, b = _tenant(runtime, "aaa"), _tenant(runtime, "bbb")
    mid = _put(runtime, a, NewMessage("+8613812345678", "hi"))[0]
    with runtime.engine.connect() as conn, pytest.raises(NotFound):
        outbox.get(conn, b, mid)


def test_concurrent_claims_are_disjoint(runtime: Runtime, clock: FixedClock) -> None:
    t = _tenant(runtime)
    for i in range(300):
        _put(runtime, t, NewMessage("+8613812345678", f"m{i}"))
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        got: list[int] = []
        try:
            while True:
                with runtime.engine.begin() as conn:
                    batch = outbox.claim(conn, clock, owner=name, limit=25, lease=LEASE)
                if not batch:
                    break
                got += [c.id for c in batch]
        except BaseException as exc:  # reported below
            errors.append(exc)
        results[name] = got

    threads = [threading.Thread(target=worker, args=(f"d{i}",)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    claimed = [i for ids in results.values() for i in ids]
    assert len(claimed) == 300 and len(set(claimed)) == 300

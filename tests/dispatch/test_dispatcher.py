"""The dispatcher end to end: outbox → channel over loopback → sandbox → receipts → final states."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hongyan.channels.base import Report
from hongyan.channels.sandbox.smsc import SandboxConfig
from hongyan.channels.service import Route
from hongyan.clock import FixedClock
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import consent_records, inbound_messages, message_parts, unmatched_receipts
from hongyan.dispatch import outbox, receipts
from hongyan.dispatch.dispatcher import Outcome
from hongyan.dispatch.receipts import final_state
from hongyan.dispatch.states import Lane, Reason, State
from hongyan.runtime import Runtime
from tests.content.support import approved_version
from tests.dispatch.conftest import (
    CREDS,
    dispatcher_on,
    drain,
    make_tenant,
    put,
    sandboxes,
    smpp_spec,
    state,
)

LONG = "【鸿雁茶饮】" + "春季新品上市，会员专享八折优惠。" * 6
ME = "+8613812345678"


def _count(runtime: Runtime, table: sa.Table) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(unscoped(sa.select(sa.func.count()).select_from(table), "test")).scalar()
        )


def test_delivered_invalid_long_and_suppression(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    ok = put(runtime, t, ME, "【鸿雁茶饮】您的订单已发货")
    long_id = put(runtime, t, ME, LONG)
    bad = put(runtime, t, "+8613900000000", "【鸿雁茶饮】您好，回T退订", lane=Lane.MARKETING)
    cfg = SandboxConfig(credentials=CREDS, invalid_numbers={"8613900000000"})

    async def scenario() -> None:
        async with (
            sandboxes(cfg) as [(smsc, port)],
            dispatcher_on(runtime, [smpp_spec("sb", "127.0.0.1", port)]) as d,
        ):
            assert await d.run_once() == 3
            await drain(d, smsc, 4)
            assert await d.run_once() == 0
            assert LONG in [m.text for m in smsc.reassembled() if m.complete]
            long_submits = [s for s in smsc.submits if s.concat is not None]
            assert len(long_submits) == 2 and long_submits[0].data_coding == 8

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert state(runtime, t, ok)["state"] == "delivered"
    long_msg = state(runtime, t, long_id)
    assert long_msg["state"] == "delivered" and long_msg["parts"] == 2
    bad_msg = state(runtime, t, bad)
    assert bad_msg["state"] == "undelivered" and bad_msg["reason"] == "invalid_number"
    assert _count(runtime, message_parts) == 4
    # 空号 learned from the receipt: the number is now filtered for every category.
    with runtime.engine.connect() as conn:
        rows = suppression.list_for(conn, t)
        assert [(r["reason"], r["source"], r["phone_masked"]) for r in rows] == [
            ("invalid", "receipt", "139****0000")
        ]
    with pytest.raises(outbox.Suppressed), runtime.engine.begin() as conn:
        outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            t,
            outbox.NewMessage("+8613900000000", "【鸿雁茶饮】验证码 1234", lane=Lane.VERIFICATION),
            max_parts=6,
        )


def test_expired_receipts(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    mid = put(runtime, t, ME, "【鸿雁茶饮】您好")
    cfg = SandboxConfig(credentials=CREDS, delivered=0.0, expired=1.0)

    async def scenario() -> None:
        async with (
            sandboxes(cfg) as [(smsc, port)],
            dispatcher_on(runtime, [smpp_spec("sb", "127.0.0.1", port)]) as d,
        ):
            await d.run_once()
            await drain(d, smsc, 1)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    m = state(runtime, t, mid)
    assert (m["state"], m["reason"]) == ("expired", "expired")


def test_td_reply_stops_the_next_marketing_send(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    first = put(runtime, t, ME, "【鸿雁茶饮】会员日满199减80，回T退订", lane=Lane.MARKETING)
    weekend = "【鸿雁茶饮】周末第二杯半价，回T退订"
    # Approved before the dispatcher runs: put() below is called inside its event loop.
    weekend_version = approved_version(runtime, t, weekend)
    cfg = SandboxConfig(credentials=CREDS)

    async def scenario() -> tuple[int, int]:
        async with (
            sandboxes(cfg) as [(smsc, port)],
            dispatcher_on(runtime, [smpp_spec("sb", "127.0.0.1", port)]) as d,
        ):
            await d.run_once()
            await drain(d, smsc, 1)
            # Planned before the reply arrives: must still not go.
            queued = put(
                runtime, t, ME, weekend, lane=Lane.MARKETING, template_version_id=weekend_version
            )
            notice = put(runtime, t, ME, "【鸿雁茶饮】您的订单已发货")
            # The reply is acknowledged once stored, i.e. by the dispatcher's flush.
            mo = asyncio.create_task(smsc.inject_mo("hongyan", ME[1:], "10690", " ｔｄ。"))
            for _ in range(100):
                if await d.flush():
                    break
                await asyncio.sleep(0.01)
            assert await mo == 0
            await d.run_once()
            await drain(d, smsc, 2)
            return queued, notice

    queued, notice = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert state(runtime, t, first)["state"] == "delivered"
    q = state(runtime, t, queued)
    assert (q["state"], q["reason"]) == ("failed", "suppressed")
    assert state(runtime, t, notice)["state"] == "delivered"  # notifications still go
    with runtime.engine.connect() as conn:
        inbox = conn.execute(TenantScope(t).select(inbound_messages)).mappings().all()
        assert [(i["kind"], i["text"], i["message_id"]) for i in inbox] == [
            ("opt_out", "ｔｄ。", first)
        ]
        consent = suppression.current_consent(conn, runtime.keyring, t, ME, "marketing")
        assert consent is not None and consent["action"] == "revoked"
        assert consent["source"] == "reply"
    assert _count(runtime, consent_records) == 1
    new_season = "【鸿雁茶饮】新品上市，回T退订"
    approved = approved_version(runtime, t, new_season)
    with pytest.raises(outbox.Suppressed), runtime.engine.begin() as conn:
        outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            t,
            outbox.NewMessage(ME, new_season, lane=Lane.MARKETING, template_version_id=approved),
            max_parts=6,
        )


def test_throttle_puts_back_with_backoff_and_expiry(runtime: Runtime, clock: FixedClock) -> None:
    t = make_tenant(runtime)
    ids = [put(runtime, t, ME, f"m{i}") for i in range(6)]
    stale = put(runtime, t, ME, "too late", validity=timedelta(seconds=1))
    clock.advance(timedelta(seconds=2))
    cfg = SandboxConfig(credentials=CREDS, throttle_per_second=2)

    async def scenario() -> None:
        async with (
            sandboxes(cfg) as [(_smsc, port)],
            dispatcher_on(runtime, [smpp_spec("sb", "127.0.0.1", port)]) as d,
        ):
            await d.run_once()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    states = [state(runtime, t, i) for i in ids]
    retried = [s for s in states if s["state"] == "planned"]
    assert retried and all(s["reason"] == "throttled" for s in retried)
    assert all(s["due_at"] > clock.now() for s in retried)  # type: ignore[operator]
    assert any(s["state"] in ("submitted", "delivered") for s in states)
    assert state(runtime, t, stale)["state"] == "expired"


def test_failover_to_the_second_channel(runtime: Runtime, clock: FixedClock) -> None:
    """The first channel throttles; what it refuses goes out on the second at once."""
    t = make_tenant(runtime)
    ids = [put(runtime, t, ME, f"【鸿雁茶饮】通知 {i}") for i in range(8)]
    a = SandboxConfig(credentials=CREDS, throttle_per_second=1)
    b = SandboxConfig(credentials=CREDS)

    async def scenario() -> tuple[int, int]:
        async with sandboxes(a, b) as [(sa_, pa), (sb_, pb)]:
            specs = [smpp_spec("a", "127.0.0.1", pa), smpp_spec("b", "127.0.0.1", pb)]
            async with dispatcher_on(runtime, specs) as d:
                d.routes = {t: [Route(t, -1, "*", ("a", "b"))]}
                for _ in range(5):
                    await d.run_once()
                await drain(d, sb_, len(sb_.submits))
                await drain(d, sa_, len(sa_.submits))
            return len(sa_.submits), len(sb_.submits)

    on_a, on_b = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert on_a >= 1 and on_b >= 1 and on_a + on_b == 8
    finals = [state(runtime, t, i) for i in ids]
    assert all(m["state"] == "delivered" for m in finals)
    assert {m["channel"] for m in finals} == {"a", "b"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_channel_that_is_down_is_skipped(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    mid = put(runtime, t, ME, "【鸿雁茶饮】您好")
    cfg = SandboxConfig(credentials=CREDS)

    async def scenario() -> None:
        async with sandboxes(cfg) as [(smsc, port)]:
            dead = smpp_spec("dead", "127.0.0.1", _free_port(), priority=1)
            live = smpp_spec("live", "127.0.0.1", port, priority=2)
            from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher

            pool = ChannelPool(runtime)
            await pool.sync([dead, live])
            await pool.channels["live"].wait_ready(5)  # type: ignore[attr-defined]
            d = Dispatcher(runtime, pool, owner="d1")
            try:
                await d.run_once()
                await drain(d, smsc, 1)
            finally:
                await pool.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    m = state(runtime, t, mid)
    assert (m["state"], m["channel"]) == ("delivered", "live")


def test_routes_by_carrier_and_no_route(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    cmcc = put(runtime, t, "+8613812345678", "【鸿雁茶饮】移动")
    ctcc = put(runtime, t, "+8618912345678", "【鸿雁茶饮】电信")
    cucc = put(runtime, t, "+8613012345678", "【鸿雁茶饮】联通")

    async def scenario() -> tuple[list[str], list[str]]:
        cfg = SandboxConfig(credentials=CREDS)
        async with sandboxes(cfg, SandboxConfig(credentials=CREDS)) as [(s1, p1), (s2, p2)]:
            specs = [
                smpp_spec("mobile", "127.0.0.1", p1, carriers=frozenset({"cmcc"})),
                smpp_spec("telecom", "127.0.0.1", p2, carriers=frozenset({"ctcc"})),
            ]
            async with dispatcher_on(runtime, specs) as d:
                assert await d.run_once() == 3
                await drain(d, s1, 1)
                await drain(d, s2, 1)
            return [s.destination for s in s1.submits], [s.destination for s in s2.submits]

    one, two = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert one == ["8613812345678"] and two == ["8618912345678"]
    assert state(runtime, t, cmcc)["channel"] == "mobile"
    assert state(runtime, t, ctcc)["channel"] == "telecom"
    m = state(runtime, t, cucc)
    assert (m["state"], m["reason"]) == ("failed", "no_route")


def test_receipt_before_the_part_is_kept_and_matched(runtime: Runtime) -> None:
    t = make_tenant(runtime)
    mid = put(runtime, t, ME, "hi")
    early = Report(message_id="ab12", stat="DELIVRD", err="000", state=2, raw="id:ab12 ...")
    with runtime.engine.begin() as conn:
        receipts.apply_reports(conn, runtime.clock, "sb", [early])
    with runtime.engine.connect() as conn:
        kept = conn.execute(unscoped(sa.select(unmatched_receipts.c.carrier_id), "t")).all()
    assert [k.carrier_id for k in kept] == ["ab12"]

    async def scenario() -> None:
        from hongyan.dispatch.dispatcher import ChannelPool, Dispatcher

        d = Dispatcher(runtime, ChannelPool(runtime), owner="d1")
        with runtime.engine.begin() as conn:
            claimed = outbox.claim(
                conn, runtime.clock, owner="d1", limit=1, lease=timedelta(seconds=30)
            )
        d._record([Outcome(claimed[0], "submitted", ["ab12"], "sb")])

    asyncio.run(scenario())
    assert state(runtime, t, mid)["state"] == "delivered"
    with runtime.engine.connect() as conn:
        assert conn.execute(unscoped(sa.select(unmatched_receipts.c.id), "t")).all() == []


def test_submitted_without_receipt_expires_after_grace(runtime: Runtime, clock: FixedClock) -> None:
    t = make_tenant(runtime)
    mid = put(runtime, t, ME, "hi", validity=timedelta(minutes=5))
    with runtime.engine.begin() as conn:
        [c] = outbox.claim(conn, clock, owner="d1", limit=1, lease=timedelta(seconds=30))
        outbox.move(conn, c.id, State.SENDING, State.SUBMITTED, owner="d1", carrier_parts=1)
        assert receipts.expire_unreceipted(conn, clock, grace=timedelta(hours=1)) == 0
    clock.advance(timedelta(hours=1, minutes=6))
    with runtime.engine.begin() as conn:
        assert receipts.expire_unreceipted(conn, clock, grace=timedelta(hours=1)) == 1
    assert state(runtime, t, mid)["state"] == "expired"


def test_final_state_rules() -> None:
    assert final_state([("DELIVRD", None), ("DELIVRD", None)]) == (State.DELIVERED, None)
    assert final_state([("DELIVRD", None), ("EXPIRED", "expired")]) == (
        State.EXPIRED,
        Reason.EXPIRED,
    )
    assert final_state([("UNDELIV", "invalid_number")]) == (
        State.UNDELIVERED,
        Reason.INVALID_NUMBER,
    )
    assert final_state([("UNDELIV", None)]) == (State.UNDELIVERED, Reason.CARRIER_ERROR)
    assert final_state([("REJECTD", "rejected"), ("UNDELIV", "invalid_number")]) == (
        State.UNDELIVERED,
        Reason.INVALID_NUMBER,
    )

"""The dispatcher end to end: outbox → SMPP over loopback → sandbox → receipts → final states."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import sqlalchemy as sa

from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.channels.smpp.client import Report, SmppClient, SmppConfig
from hongyan.clock import FixedClock
from hongyan.db.scope import unscoped
from hongyan.db.tables import message_parts, unmatched_receipts
from hongyan.dispatch import outbox
from hongyan.dispatch.dispatcher import Dispatcher, Outcome, final_state
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane, Reason, State
from hongyan.runtime import Runtime
from hongyan.tenants import service

CREDS = {"hongyan": "pw-1"}
LONG = "【鸿雁茶饮】" + "春季新品上市，会员专享八折优惠。" * 6


def _tenant(runtime: Runtime) -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug="tea", name="tea").id


def _put(runtime: Runtime, tenant: int, to: str, text: str, **kw: object) -> int:
    with runtime.engine.begin() as conn:
        return outbox.enqueue(
            conn, runtime.clock, runtime.keyring, tenant, NewMessage(to, text, **kw), max_parts=6
        )[0]  # type: ignore[arg-type]


def _state(runtime: Runtime, tenant: int, mid: int) -> dict[str, object]:
    with runtime.engine.connect() as conn:
        return outbox.get(conn, tenant, mid)


async def _with_dispatcher(
    runtime: Runtime,
    config: SandboxConfig,
    body: Callable[[Dispatcher, SandboxSmsc], Awaitable[None]],
) -> None:
    smsc = SandboxSmsc(config)
    host, port = await smsc.start()
    holder: list[Dispatcher] = []

    async def on_report(r: Report) -> None:
        await holder[0].on_report(r)

    client = SmppClient(SmppConfig(host, port, "hongyan", CREDS["hongyan"]), on_report=on_report)
    dispatcher = Dispatcher(runtime, "sandbox", client, owner="d1")
    holder.append(dispatcher)
    await client.connect()
    try:
        await body(dispatcher, smsc)
    finally:
        await client.close()
        await smsc.stop()


async def _drain(d: Dispatcher, smsc: SandboxSmsc, receipts: int) -> None:
    for _ in range(500):
        if len(smsc.receipts) >= receipts and not d._reports:
            break
        await asyncio.sleep(0.01)
        await d.flush_reports()


def test_outcomes_long_messages_and_receipts(runtime: Runtime) -> None:
    t = _tenant(runtime)
    ok = _put(runtime, t, "+8613812345678", "【鸿雁茶饮】您的订单已发货")
    long_id = _put(runtime, t, "+8613812345678", LONG)
    bad = _put(runtime, t, "+8613900000000", "【鸿雁茶饮】您好", lane=Lane.MARKETING)
    cfg = SandboxConfig(credentials=CREDS, invalid_numbers={"8613900000000"})

    async def body(d: Dispatcher, smsc: SandboxSmsc) -> None:
        assert await d.run_once() == 3
        await _drain(d, smsc, 4)
        assert await d.run_once() == 0
        assert LONG in [m.text for m in smsc.reassembled()]

    asyncio.run(asyncio.wait_for(_with_dispatcher(runtime, cfg, body), 20))
    assert _state(runtime, t, ok)["state"] == "delivered"
    long_msg = _state(runtime, t, long_id)
    assert long_msg["state"] == "delivered" and long_msg["parts"] == 2
    bad_msg = _state(runtime, t, bad)
    assert bad_msg["state"] == "undelivered" and bad_msg["reason"] == "invalid_number"
    with runtime.engine.connect() as conn:
        parts = conn.execute(
            unscoped(sa.select(sa.func.count()).select_from(message_parts), "test")
        ).scalar()
    assert parts == 4


def test_throttle_puts_back_with_backoff_and_expiry(runtime: Runtime, clock: FixedClock) -> None:
    t = _tenant(runtime)
    ids = [_put(runtime, t, "+8613812345678", f"m{i}") for i in range(6)]
    stale = _put(runtime, t, "+8613812345678", "too late", validity=timedelta(seconds=1))
    clock.advance(timedelta(seconds=2))
    cfg = SandboxConfig(credentials=CREDS, throttle_per_second=2)

    async def body(d: Dispatcher, smsc: SandboxSmsc) -> None:
        await d.run_once()

    asyncio.run(asyncio.wait_for(_with_dispatcher(runtime, cfg, body), 20))
    states = [_state(runtime, t, i) for i in ids]
    retried = [s for s in states if s["state"] == "planned"]
    assert retried and all(s["reason"] == "throttled" for s in retried)
    assert all(s["due_at"] > clock.now() for s in retried)  # type: ignore[operator]
    assert any(s["state"] in ("submitted", "delivered") for s in states)
    assert _state(runtime, t, stale)["state"] == "expired"


def test_receipt_before_the_part_is_kept_and_matched(runtime: Runtime) -> None:
    t = _tenant(runtime)
    mid = _put(runtime, t, "+8613812345678", "hi")
    early = Report(message_id="ab12", stat="DELIVRD", err="000", state=2, raw="id:ab12 ...")
    d = Dispatcher(runtime, "sandbox", None, owner="d1")  # type: ignore[arg-type]
    d._apply_reports([early])
    with runtime.engine.connect() as conn:
        kept = conn.execute(unscoped(sa.select(unmatched_receipts.c.carrier_id), "t")).all()
    assert [k.carrier_id for k in kept] == ["ab12"]
    with runtime.engine.begin() as conn:
        claimed = outbox.claim(
            conn, runtime.clock, owner="d1", limit=1, lease=timedelta(seconds=30)
        )

    d._record([Outcome(claimed[0], "submitted", ["ab12"])])
    assert _state(runtime, t, mid)["state"] == "delivered"
    with runtime.engine.connect() as conn:
        assert conn.execute(unscoped(sa.select(unmatched_receipts.c.id), "t")).all() == []


def test_final_state_rules() -> None:
    inv = frozenset({"001"})
    assert final_state(["DELIVRD", "DELIVRD"], ["000", "000"], inv) == (State.DELIVERED, None)
    assert final_state(["DELIVRD", "EXPIRED"], ["000", "003"], inv)[1] is Reason.EXPIRED
    assert final_state(["UNDELIV"], ["001"], inv) == (State.UNDELIVERED, Reason.INVALID_NUMBER)
    assert final_state(["UNDELIV"], ["099"], inv) == (State.UNDELIVERED, Reason.CARRIER_ERROR)
    assert final_state(["REJECTD"], ["008"], inv) == (State.UNDELIVERED, Reason.REJECTED)

"""Quiet hours at the dispatcher, at fixed clocks over a real SMPP bind to the sandbox: marketing
waits for the recipient's morning, verification and notification do not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hongyan.channels.sandbox.smsc import SandboxConfig
from hongyan.clock import FixedClock
from hongyan.db.scope import TenantScope
from hongyan.db.tables import policies
from hongyan.dispatch.service import quiet_hours
from hongyan.dispatch.states import Lane
from hongyan.runtime import Runtime
from hongyan.tenants import service
from tests.dispatch.conftest import CREDS, dispatcher_on, put, sandboxes, smpp_spec, state

SH = ZoneInfo("Asia/Shanghai")
ME = "+8613812345678"
TONIGHT = "【鸿雁茶饮】今晚会员日第二杯半价，21点前有效，回T退订"
TOMORROW = "【鸿雁茶饮】明日会员日第二杯半价，限当天，回T退订"
BREAKFAST = "【鸿雁茶饮】早餐套餐立减5元，今天有效，回T退订"
DINNER = "【鸿雁茶饮】晚餐套餐立减8元，今天有效，回T退订"


def _tenant(runtime: Runtime, slug: str, zone: str = "Asia/Shanghai") -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug=slug, name=slug, timezone=zone).id


def _pass(runtime: Runtime, *, quiet: bool = True) -> list[str]:
    """One dispatcher pass against the sandbox; returns the destinations the carrier got."""

    async def scenario() -> list[str]:
        async with (
            sandboxes(SandboxConfig(credentials=CREDS)) as [(smsc, port)],
            dispatcher_on(runtime, [smpp_spec("sb", "127.0.0.1", port)]) as d,
        ):
            if quiet:
                with runtime.engine.connect() as conn:
                    d.quiet = quiet_hours(conn)
            await d.run_once()
            await asyncio.sleep(0.05)
            return [s.destination for s in smsc.submits]

    return asyncio.run(scenario())


def test_2059_sends_and_2100_waits_until_0800(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    t = _tenant(runtime, "tea")
    clock.set(datetime(2026, 11, 11, 20, 59, tzinfo=SH))
    early = put(runtime, t, ME, TONIGHT, lane=Lane.MARKETING)
    assert _pass(runtime) == ["8613812345678"]
    assert state(runtime, t, early)["state"] in ("submitted", "delivered")

    clock.set(datetime(2026, 11, 11, 21, 0, tzinfo=SH))
    late = put(runtime, t, ME, TOMORROW, lane=Lane.MARKETING)
    note = put(runtime, t, ME, "【鸿雁茶饮】您的订单已发货", lane=Lane.NOTIFICATION)
    code = put(runtime, t, ME, "【鸿雁茶饮】验证码 123456", lane=Lane.VERIFICATION)
    assert len(_pass(runtime)) == 2  # the verification code and the notice, not the offer
    held = state(runtime, t, late)
    assert held["state"] == "planned" and held["reason"] == "quiet_hours"
    assert held["due_at"] == datetime(2026, 11, 12, 8, 0, tzinfo=SH)
    assert held["attempts"] == 0  # waiting is not an attempt
    assert state(runtime, t, note)["state"] in ("submitted", "delivered")
    assert state(runtime, t, code)["state"] in ("submitted", "delivered")

    clock.set(datetime(2026, 11, 12, 7, 59, tzinfo=SH))
    assert _pass(runtime) == []  # not due yet
    clock.set(datetime(2026, 11, 12, 8, 0, tzinfo=SH))
    assert _pass(runtime) == ["8613812345678"]
    assert state(runtime, t, late)["state"] in ("submitted", "delivered")


def test_each_tenant_waits_for_its_own_morning(runtime: Runtime) -> None:
    """10:00 in Shanghai is 21:00 in New York (the evening before): the New York tenant's offer
    waits for 08:00 there, the Shanghai tenant's goes."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 12, 10, 0, tzinfo=SH))
    shanghai, new_york = _tenant(runtime, "tea"), _tenant(runtime, "deli", "America/New_York")
    a = put(runtime, shanghai, ME, BREAKFAST, lane=Lane.MARKETING)
    b = put(runtime, new_york, "+8613812345679", DINNER, lane=Lane.MARKETING)
    assert _pass(runtime) == ["8613812345678"]
    assert state(runtime, shanghai, a)["state"] in ("submitted", "delivered")
    waiting = state(runtime, new_york, b)
    assert waiting["due_at"] == datetime(2026, 11, 12, 8, 0, tzinfo=ZoneInfo("America/New_York"))


def test_a_tenant_policy_moves_the_quiet_hours(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 11, 20, 30, tzinfo=SH))
    t = _tenant(runtime, "tea")
    with runtime.engine.begin() as conn:
        conn.execute(TenantScope(t).update(policies).values(quiet_start="20:00", quiet_end="09:30"))
    mid = put(runtime, t, ME, "【鸿雁茶饮】新品立减3元，本周有效，回T退订", lane=Lane.MARKETING)
    assert _pass(runtime) == []
    assert state(runtime, t, mid)["due_at"] == datetime(2026, 11, 12, 1, 30, tzinfo=UTC)


def test_the_recipients_own_zone_holds_marketing(runtime: Runtime) -> None:
    """A Shanghai tenant at 10:00 (21:00 the evening before in New York): the offer to a contact
    living in New York, and to a New York number nobody imported, wait for 08:00 there; the one
    to a contact in the tenant's zone goes. Notifications to New York are not held."""
    import io

    from hongyan.contacts import importer
    from hongyan.contacts import service as contacts

    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 12, 10, 0, tzinfo=SH))
    t = _tenant(runtime, "tea")
    data = "手机号,时区\n13812345678,America/New_York\n13812345679,\n".encode()
    contacts.import_stream(runtime, t, io.BytesIO(data), "c.csv", importer.ImportOptions())
    abroad = put(runtime, t, ME, BREAKFAST, lane=Lane.MARKETING)
    home = put(runtime, t, "+8613812345679", DINNER, lane=Lane.MARKETING)
    visitor = put(runtime, t, "+12125551234", TONIGHT, lane=Lane.MARKETING)
    notice = put(runtime, t, "+12125551235", "【鸿雁茶饮】您的订单已发货", lane=Lane.NOTIFICATION)
    assert sorted(_pass(runtime)) == ["12125551235", "8613812345679"]
    morning = datetime(2026, 11, 12, 8, 0, tzinfo=ZoneInfo("America/New_York"))
    for held in (abroad, visitor):
        row = state(runtime, t, held)
        assert (row["state"], row["reason"], row["due_at"]) == ("planned", "quiet_hours", morning)
    assert state(runtime, t, abroad)["time_zone"] == "America/New_York"
    assert state(runtime, t, abroad)["contact_id"] is not None  # counted toward its caps
    assert state(runtime, t, home)["state"] in ("submitted", "delivered")
    assert state(runtime, t, notice)["state"] in ("submitted", "delivered")
    clock.set(morning)
    assert sorted(_pass(runtime)) == ["12125551234", "8613812345678"]

"""Shared steps for the journey and segment report tests: the dispatcher's moves of planned
messages, made through the outbox's own functions."""

from __future__ import annotations

from datetime import timedelta

from hongyan.clock import FixedClock
from hongyan.dispatch import outbox
from hongyan.dispatch.states import Reason, State
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role

CHANNEL = "sandbox-test"  # tests.campaigns.support.make_shop's channel, 0.05 yuan a part
OWNER = "disp-1"


def claim_all(runtime: Runtime) -> list[int]:
    """Every message due within the next minute (a launch spreads them at the channel's
    rate), claimed by one dispatcher a minute on."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(minutes=1))
    with runtime.engine.begin() as conn:
        got = outbox.claim(
            conn, runtime.clock, owner=OWNER, limit=1000, lease=timedelta(seconds=30)
        )
    return [c.id for c in got]


def submit(runtime: Runtime, mid: int) -> None:
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        assert outbox.move(
            conn, mid, State.SENDING, State.SUBMITTED, owner=OWNER, channel=CHANNEL,
            submitted_at=now, carrier_parts=1,
        )  # fmt: skip


def deliver(runtime: Runtime, mid: int) -> None:
    with runtime.engine.begin() as conn:
        assert outbox.move(conn, mid, State.SUBMITTED, State.DELIVERED, done_at=runtime.clock.now())


def undeliver(runtime: Runtime, mid: int) -> None:
    with runtime.engine.begin() as conn:
        assert outbox.move(
            conn, mid, State.SUBMITTED, State.UNDELIVERED, reason=Reason.INVALID_NUMBER.value,
            carrier_code="001", done_at=runtime.clock.now(),
        )  # fmt: skip


def unclaim(runtime: Runtime, mid: int) -> None:
    """Back to planned (the dispatcher gave it up): still pending in the report."""
    with runtime.engine.begin() as conn:
        assert outbox.move(conn, mid, State.SENDING, State.PLANNED, owner=OWNER)


def make_key(runtime: Runtime, tenant_id: int, role: Role) -> str:
    with runtime.engine.begin() as conn:
        return apikeys.create(conn, runtime.clock, tenant_id, "k", role).key


def console_user(runtime: Runtime, tenant_id: int, email: str = "analyst@tea.example") -> str:
    """A console user of the tenant (an analyst); returns the e-mail to log in with."""
    from hongyan.tenants import service
    from tests.web.test_console import PASSWORD

    with runtime.engine.begin() as conn:
        service.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=tenant_id, email=email,
            name="分析师", role="analyst", password=PASSWORD,
        )  # fmt: skip
    return email

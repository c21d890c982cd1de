"""A tenant's send records in every state, made through the outbox's own functions.

Messages are queued with ``outbox.enqueue``, claimed with ``outbox.claim`` and moved with
``outbox.move``; only carrier parts and replies (whose writers are the dispatcher's internals)
are inserted directly, through ``TenantScope``. Used by the query, console and browser tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hongyan.clock import FixedClock
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import inbound_messages, message_parts
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.states import Lane, Reason, State
from hongyan.runtime import Runtime
from hongyan.security.keyring import mask_phone
from hongyan.tenants import service
from tests.content.support import approved_version

# 11:00 on 10 November in Shanghai, and 00:30 on 11 November (still the 10th in UTC).
DAY1 = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 10, 16, 30, tzinfo=UTC)
LEASE = timedelta(seconds=30)
CHANNEL = "smpp-sandbox"
LONG_TEXT = "【鸿雁茶饮】李女士，您去年购买过的春季新茶今日返场，会员满199减80，" * 2 + "回T退订"

NUMBERS = {
    "delivered": "+8613812345678",
    "invalid": "+8613900000001",
    "submitted": "+8613700005678",
    "failed": "+8615900002222",
    "expired": "+8613300009999",
    "retry": "+8618600001234",
    "sending": "+8613600007777",
    "planned": "+8615000004321",
}
OTHER_NUMBER = "+8613812345678"  # the other tenant messages the same number


@dataclass
class Seed:
    tenant: int
    other: int
    ids: dict[str, int] = field(default_factory=dict)
    other_id: int = 0
    replies: dict[str, int] = field(default_factory=dict)

    @property
    def numbers(self) -> dict[str, str]:
        return NUMBERS


def _enqueue(runtime: Runtime, tenant: int, new: NewMessage) -> int:
    if new.lane is Lane.MARKETING:  # marketing goes out with an approved template only
        new = replace(new, template_version_id=approved_version(runtime, tenant, new.text))
    with runtime.engine.begin() as conn:
        mid, created = outbox.enqueue(
            conn, runtime.clock, runtime.keyring, tenant, new, max_parts=6
        )
    assert created
    return mid


def _part(
    runtime: Runtime,
    tenant: int,
    mid: int,
    n: int,
    carrier_id: str,
    receipt: tuple[str, str, str | None] | None,
    at: datetime,
) -> None:
    values: dict[str, object] = {
        "message_id": mid,
        "part_no": n,
        "channel": CHANNEL,
        "carrier_id": carrier_id,
        "submitted_at": at,
    }
    if receipt is not None:
        stat, err, reason = receipt
        values |= {"stat": stat, "err": err, "reason": reason, "done_at": at + timedelta(seconds=4)}
    with runtime.engine.begin() as conn:
        conn.execute(TenantScope(tenant).insert(message_parts), values)


def _move(runtime: Runtime, mid: int, current: State, target: State, **fields: object) -> None:
    with runtime.engine.begin() as conn:
        assert outbox.move(conn, mid, current, target, **fields)


def _claim(runtime: Runtime, limit: int) -> list[int]:
    with runtime.engine.begin() as conn:
        claimed = outbox.claim(conn, runtime.clock, owner="disp-1", limit=limit, lease=LEASE)
    return [c.id for c in claimed]


def tenant(runtime: Runtime, slug: str, name: str, tz: str = "Asia/Shanghai") -> int:
    with runtime.engine.begin() as conn:
        return service.create_tenant(
            conn, runtime.clock, slug=slug, name=name, signature=f"【{name}】", timezone=tz
        ).id


def seed(runtime: Runtime, clock: FixedClock, a: int | None = None, b: int | None = None) -> Seed:
    """Tenant A's messages in every state on two local days, replies, suppressions; tenant B
    messages the same number as A's delivered message."""
    a = a or tenant(runtime, "tea-house", "鸿雁茶饮")
    b = b or tenant(runtime, "noodle-bar", "江南面馆")
    s = Seed(a, b)
    clock.set(DAY1)
    for name, lane, text in (
        ("delivered", Lane.NOTIFICATION, LONG_TEXT),
        ("invalid", Lane.MARKETING, "【鸿雁茶饮】双11会员日，满199减80，回T退订"),
        ("submitted", Lane.VERIFICATION, "【鸿雁茶饮】验证码 4821，5 分钟内有效"),
        ("failed", Lane.NOTIFICATION, "【鸿雁茶饮】您的订单已发货"),
        ("expired", Lane.NOTIFICATION, "【鸿雁茶饮】您的会员积分即将到期"),
        ("retry", Lane.NOTIFICATION, "【鸿雁茶饮】您的外卖已送达"),
    ):
        s.ids[name] = _enqueue(runtime, a, NewMessage(NUMBERS[name], text, lane=lane))
    s.other_id = _enqueue(runtime, b, NewMessage(OTHER_NUMBER, "【江南面馆】您的面已出锅"))

    clock.advance(timedelta(seconds=20))
    assert sorted(_claim(runtime, 100)) == sorted([*s.ids.values(), s.other_id])
    clock.advance(timedelta(seconds=1))
    now = clock.now()
    owner = {"owner": "disp-1"}
    for name, mid, tid in (
        ("delivered", s.ids["delivered"], a),
        ("invalid", s.ids["invalid"], a),
        ("submitted", s.ids["submitted"], a),
        ("other", s.other_id, b),
    ):
        parts = 2 if name == "delivered" else 1
        _move(
            runtime,
            mid,
            State.SENDING,
            State.SUBMITTED,
            **owner,
            channel=CHANNEL,
            submitted_at=now,
            carrier_parts=parts,
        )
        receipt = {
            "delivered": ("DELIVRD", "000", None),
            "invalid": ("UNDELIV", "001", Reason.INVALID_NUMBER.value),
            "submitted": None,
            "other": ("DELIVRD", "000", None),
        }[name]
        for n in range(1, parts + 1):
            _part(runtime, tid, mid, n, f"{mid:04x}{n:02x}", receipt, now)
    done = now + timedelta(seconds=4)
    _move(runtime, s.ids["delivered"], State.SUBMITTED, State.DELIVERED, done_at=done)
    _move(runtime, s.other_id, State.SUBMITTED, State.DELIVERED, done_at=done)
    _move(
        runtime,
        s.ids["invalid"],
        State.SUBMITTED,
        State.UNDELIVERED,
        reason=Reason.INVALID_NUMBER.value,
        carrier_code="001",
        done_at=done,
    )
    _move(
        runtime,
        s.ids["failed"],
        State.SENDING,
        State.FAILED,
        **owner,
        reason=Reason.CARRIER_ERROR.value,
        carrier_code="0x00000045",
        channel=CHANNEL,
        done_at=now,
    )
    _move(
        runtime,
        s.ids["expired"],
        State.SENDING,
        State.EXPIRED,
        **owner,
        reason=Reason.EXPIRED.value,
        done_at=now,
    )
    _move(
        runtime,
        s.ids["retry"],
        State.SENDING,
        State.PLANNED,
        **owner,
        due_at=now + timedelta(seconds=2),
        reason=Reason.THROTTLED.value,
        carrier_code="0x00000058",
    )

    # The next local day: one message in flight, one scheduled for tomorrow by a campaign.
    clock.set(DAY2)
    code = NewMessage(NUMBERS["sending"], "【鸿雁茶饮】验证码 0937", lane=Lane.VERIFICATION)
    s.ids["sending"] = _enqueue(runtime, a, code)
    s.ids["planned"] = _enqueue(
        runtime,
        a,
        NewMessage(
            NUMBERS["planned"],
            "【鸿雁茶饮】明日会员日，全场 8 折，回T退订",
            lane=Lane.MARKETING,
            source="campaign",
            source_ref="c-18",
            due_at=DAY2 + timedelta(days=1),
        ),
    )
    assert _claim(runtime, 1) == [s.ids["sending"]]  # the verification lane goes first

    # Replies: a thank-you to the delivered message, a 退订 to the submitted one, one for B.
    replies = [
        (a, "thanks", NUMBERS["delivered"], "好的，谢谢", "reply", s.ids["delivered"], 3600),
        (a, "optout", NUMBERS["submitted"], "退订", "opt_out", s.ids["submitted"], 7200),
        (b, "other", OTHER_NUMBER, "面很好吃", "reply", s.other_id, 1800),
    ]
    with runtime.engine.begin() as conn:
        for tid, key, phone, text, kind, mid, later in replies:
            ctx = f"tenant:{tid}:phone"
            result = conn.execute(
                TenantScope(tid).insert(inbound_messages),
                {
                    "channel": CHANNEL,
                    "phone_index": runtime.keyring.blind_index(phone, ctx),
                    "phone_cipher": runtime.keyring.encrypt(phone, ctx),
                    "phone_masked": mask_phone(phone),
                    "destination": "10690001" + ("01" if tid == a else "02"),
                    "text": text,
                    "kind": kind,
                    "message_id": mid,
                    "received_at": DAY1 + timedelta(seconds=later),
                },
            )
            assert result.inserted_primary_key is not None
            s.replies[key] = int(result.inserted_primary_key[0])
        suppression.add(
            conn,
            clock,
            runtime.keyring,
            [
                suppression.NewSuppression(a, NUMBERS["submitted"], "opt_out", "reply", "退订"),
                suppression.NewSuppression(a, NUMBERS["invalid"], "invalid", "receipt", "001"),
                suppression.NewSuppression(b, OTHER_NUMBER, "manual", "console"),
            ],
        )
    clock.advance(timedelta(seconds=5))
    return s

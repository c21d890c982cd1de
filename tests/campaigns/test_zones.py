"""Quiet hours in the recipient's own zone, at fixed clocks, on both databases: one campaign to a
contact in New York and the rest in Shanghai plans each for its own allowed hours; journeys
too; the zone grouping keeps the order and the rate (pure)."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from hongyan.campaigns import journeys, zones
from hongyan.campaigns import service as campaigns
from hongyan.campaigns.materialise import Spread
from hongyan.campaigns.windows import Rules
from hongyan.clock import FixedClock
from hongyan.contacts import service as contacts_service
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.runtime import Runtime
from tests.campaigns.support import make_shop

NY = ZoneInfo("America/New_York")
SH = ZoneInfo("Asia/Shanghai")


def _set_zone(runtime: Runtime, tenant_id: int, phone: str, zone: str) -> int:
    with runtime.engine.begin() as conn:
        cid = contacts_service.find_id(conn, runtime.keyring, tenant_id, phone)
        assert cid is not None
        contacts_service.set_time_zone(conn, runtime.clock, tenant_id, cid, zone, actor="t")
    return cid


def _rows(runtime: Runtime, **where: Any) -> list[Any]:
    stmt = sa.select(messages).order_by(messages.c.due_at, messages.c.id)
    for k, v in where.items():
        stmt = stmt.where(messages.c[k] == v)
    with runtime.engine.connect() as conn:
        return list(conn.execute(unscoped(stmt, "test")))


def test_new_york_and_shanghai_in_one_campaign(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime)
    ny = _set_zone(runtime, shop.tenant_id, shop.phones[5], "America/New_York")
    # 10:00 in Shanghai is 21:00 the evening before in New York (quiet there until 08:00)
    clock.set(datetime(2026, 11, 12, 10, 0, tzinfo=SH))
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, clock, runtime.keyring, shop.tenant_id, name="会员日", segment=shop.segment_id,
            variants=[{"template_version_id": shop.versions[0]}], actor="t",
        )  # fmt: skip
        done = campaigns.launch(conn, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t")
    assert done["counts"]["planned"] == 38
    rows = _rows(runtime, campaign_id=camp["id"])
    by_contact = {r.contact_id: r for r in rows}
    assert by_contact[ny].due_at == datetime(2026, 11, 12, 8, 0, tzinfo=NY)
    assert by_contact[ny].time_zone == "America/New_York"
    others = [r for r in rows if r.contact_id != ny]
    assert len(others) == 37 and all(r.time_zone is None for r in others)
    assert min(r.due_at for r in others) == clock.now()
    assert max(r.due_at for r in others) < clock.now() + dt.timedelta(minutes=1)
    assert done["counts"]["first_due"] == clock.now().isoformat()


def test_a_journey_waits_for_the_contacts_morning(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime, 4, opted_out=0, without_consent=0)
    ny = _set_zone(runtime, shop.tenant_id, shop.phones[0], "America/New_York")
    clock.set(datetime(2026, 11, 12, 10, 0, tzinfo=SH))
    from hongyan.contacts import events

    with runtime.engine.begin() as conn:
        template_id = next(
            c["template_id"]
            for c in campaigns.copy_choices(conn, shop.tenant_id)
            if c["version_id"] == shop.versions[2]
        )
        j = journeys.create(
            conn, clock, shop.tenant_id, name="欢迎", trigger="registration",
            steps=[{"kind": "send", "template_id": template_id}], actor="t",
        )  # fmt: skip
        batch = events.parse_batch(
            [{"event_id": f"r{i}", "kind": "registration", "phone": p,
              "occurred_at": clock.now().isoformat()} for i, p in enumerate(shop.phones[:2])],
            SH,
            now=clock.now(),
        )  # fmt: skip
        events.ingest(conn, clock, runtime.keyring, shop.tenant_id, batch)
    journeys.tick(runtime.engine, clock, runtime.keyring)
    rows = _rows(runtime, source="journey")
    assert {r.contact_id: r.due_at for r in rows}[ny] == datetime(2026, 11, 12, 8, 0, tzinfo=NY)
    assert sorted(r.due_at for r in rows)[0] == clock.now()
    assert j["id"]


def _make(now: datetime, rules: Rules) -> Any:
    return lambda z, r, n: Spread(now, r, zone=z, rules=rules, total=n)


def test_grouping_keeps_order_and_shares_the_rate() -> None:
    now = datetime(2026, 11, 12, 2, 0, tzinfo=UTC)  # 10:00 Shanghai, 21:00 New York
    order = [(i, "AB"[i % 2]) for i in range(10)]
    own = {3: "America/New_York", 7: "America/New_York"}
    grouped, spread = zones.plan(order, own, "Asia/Shanghai", 10.0, _make(now, Rules()))
    assert grouped == [o for o in order if o[0] not in own] + [(3, "B"), (7, "B")]
    times = spread.times(0, 10)
    assert all(t is not None for t in times)
    sh = [t[0] for t in times[:8] if t]
    ny = [t[0] for t in times[8:] if t]
    # Shanghai's 8 take 8/10 of the rate (10 a second): 0.125 s apart; New York's wait
    assert sh[0] == now and sh[1] - sh[0] == dt.timedelta(seconds=0.125)
    assert ny[0] == datetime(2026, 11, 12, 8, 0, tzinfo=NY)
    # asking for a slice that crosses the groups gives the same answers
    assert spread.times(6, 3) == times[6:9]
    assert spread.first == now
    # one zone only: the plain spread, the order untouched
    same, plain = zones.plan(order, {}, "Asia/Shanghai", 10.0, _make(now, Rules()))
    assert same == order and not isinstance(plain, zones.ZonedSpread)
    # the caps' reference time is the earliest first allowed minute over the zones
    first = zones.firsts(
        {"America/New_York"}, "Asia/Shanghai", lambda z: Spread(now, 1, zone=z, rules=Rules())
    )
    assert first == now

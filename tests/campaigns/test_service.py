"""Campaigns against both databases: create, estimate, launch, caps, pause/resume/cancel,
the scheduler, A/B decisions, and what a failed launch leaves behind (nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.campaigns import caps, extras, launching
from hongyan.campaigns import service as campaigns
from hongyan.campaigns.schedule import ScheduleInvalid
from hongyan.campaigns.windows import WindowInvalid
from hongyan.clock import FixedClock
from hongyan.contacts.importer import name_context
from hongyan.content.gate import TemplateNotApproved
from hongyan.db.scope import unscoped
from hongyan.db.tables import (
    audiences,
    campaign_runs,
    contacts,
    messages,
)
from hongyan.db.tables import (
    campaigns as campaigns_table,
)
from hongyan.dispatch.states import State
from hongyan.errors import Conflict, NotFound
from hongyan.runtime import Runtime
from tests.campaigns.support import Shop, make_shop
from tests.content.support import approved_version


@pytest.fixture
def shop(runtime: Runtime) -> Shop:
    return make_shop(runtime)


def _create(runtime: Runtime, shop: Shop, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "会员日",
        "segment": shop.segment_id,
        "variants": [{"template_version_id": shop.versions[0]}],
    }
    values.update(kw)
    with runtime.engine.begin() as conn:
        return campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, actor="t", **values
        )


def _launch(runtime: Runtime, shop: Shop, ref: int) -> dict[str, Any]:
    with runtime.engine.begin() as conn:
        return campaigns.launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, ref, actor="t"
        )


def _messages(runtime: Runtime, campaign_id: int | None = None) -> list[Any]:
    stmt = sa.select(messages).order_by(messages.c.due_at, messages.c.id)
    if campaign_id is not None:
        stmt = stmt.where(messages.c.campaign_id == campaign_id)
    with runtime.engine.connect() as conn:
        return list(conn.execute(unscoped(stmt, "test")))


def test_launch_materialises_every_message(runtime: Runtime, shop: Shop) -> None:
    camp = _create(runtime, shop)
    assert camp["state"] == "draft"
    with runtime.engine.begin() as conn:
        est = campaigns.estimate(conn, runtime.clock, shop.tenant_id, camp["id"])
    # 40 contacts: one opted out, one without consent
    assert est["recipients"] == 38
    assert est["excluded"]["suppressed"] == 1 and est["excluded"]["no_consent"] == 1
    assert Decimal(est["price_per_part"]) == Decimal("0.05") and est["parts"] == 38
    assert est["cost"] == "1.90"
    # the estimate leaves nothing behind
    with runtime.engine.connect() as conn:
        assert (
            conn.execute(unscoped(sa.select(sa.func.count()).select_from(audiences), "t")).scalar()
            == 0
        )
    done = _launch(runtime, shop, camp["id"])
    assert done["state"] == "running"
    counts = done["counts"]
    assert counts["planned"] == 38 and counts["suppressed"] == 1 and counts["no_consent"] == 1
    rows = _messages(runtime, camp["id"])
    assert len(rows) == 38
    assert {r.state for r in rows} == {"planned"}
    assert {r.lane for r in rows} == {2} and {r.source for r in rows} == {"campaign"}
    assert {r.template_version_id for r in rows} == {shop.versions[0]}
    # the ciphertext was copied, not re-encrypted: it decrypts to the contact's number
    by_contact = {r.contact_id: r for r in rows}
    with runtime.engine.connect() as conn:
        people = list(conn.execute(unscoped(sa.select(contacts), "t")))
    for person in people:
        if person.id in by_contact:
            m = by_contact[person.id]
            assert bytes(m.dest_cipher) == bytes(person.phone_cipher)
            assert bytes(m.dest_index) == bytes(person.phone_index)
            name = (
                runtime.keyring.decrypt(bytes(person.name_cipher), name_context(shop.tenant_id))
                if person.name_cipher
                else "您好"
            )
            assert m.body == f"【鸿雁茶饮】{name}，会员日第二杯半价，今晚21点前有效，回T退订"
            assert m.parts == 1 and m.encoding == "ucs2"
    # spread at the channel's rate (50/s), from now (10:00 in Shanghai, allowed)
    dues = [r.due_at for r in rows]
    assert dues[0] == runtime.clock.now()
    assert dues[-1] - dues[0] == timedelta(seconds=37 / 50)
    with runtime.engine.connect() as conn:
        st = campaigns.status(conn, runtime.clock, shop.tenant_id, camp["id"])
    assert st["messages"] == {"planned": 38}
    assert st["cost"] == "1.90"
    assert st["runs"][0]["counts"]["planned"] == 38


def test_launch_in_quiet_hours_waits_for_the_morning(runtime: Runtime, shop: Shop) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 11, 13, 0, tzinfo=UTC))  # 21:00 in Shanghai
    camp = _create(runtime, shop)
    _launch(runtime, shop, camp["id"])
    rows = _messages(runtime, camp["id"])
    assert rows[0].due_at == datetime(2026, 11, 12, 0, 0, tzinfo=UTC)  # 08:00 the next day
    clock.set(datetime(2026, 11, 11, 12, 59, tzinfo=UTC))  # 20:59: sends now
    camp2 = _create(runtime, shop, name="二", rate=1.0, on_window_end="expire")
    _launch(runtime, shop, camp2["id"])
    rows = _messages(runtime, camp2["id"])
    # one a second until 21:00: 60 fit, all 38 go before it; every one expires at 21:00
    assert rows[0].due_at == clock.now()
    assert {r.expires_at for r in rows} == {datetime(2026, 11, 11, 13, 0, tzinfo=UTC)}


def test_a_window_that_cannot_hold_everyone_expires_the_rest(runtime: Runtime, shop: Shop) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 11, 12, 59, tzinfo=UTC))  # 20:59: one minute left
    camp = _create(runtime, shop, rate=1 / 6, on_window_end="expire")
    done = _launch(runtime, shop, camp["id"])
    assert done["counts"]["planned"] == 10 and done["counts"]["window_full"] == 28
    camp2 = _create(runtime, shop, name="carry", rate=1 / 6, on_window_end="carry")
    done = _launch(runtime, shop, camp2["id"])
    rows = _messages(runtime, camp2["id"])
    assert done["counts"]["planned"] == 38
    assert rows[10].due_at == datetime(2026, 11, 12, 0, 0, tzinfo=UTC)


def test_frequency_caps_hold_across_campaigns(runtime: Runtime, shop: Shop) -> None:
    with runtime.engine.begin() as conn:
        caps.set_policy(conn, runtime.clock, shop.tenant_id, {"default": [2, 30]})
    for i in range(2):
        camp = _create(runtime, shop, name=f"c{i}")
        assert _launch(runtime, shop, camp["id"])["counts"]["planned"] == 38
    camp = _create(runtime, shop, name="third")
    with pytest.raises(campaigns.EmptyAudience):
        _launch(runtime, shop, camp["id"])
    # nothing was left behind by the refused launch
    with runtime.engine.connect() as conn:
        assert (
            conn.execute(unscoped(sa.select(sa.func.count()).select_from(audiences), "t")).scalar()
            == 2
        )
    assert _messages(runtime, camp["id"]) == []
    # cancelled messages stop counting
    with runtime.engine.begin() as conn:
        first = campaigns.get(conn, shop.tenant_id, "c0")
        campaigns.cancel(conn, runtime.clock, shop.tenant_id, first["id"], actor="t")
    assert _launch(runtime, shop, camp["id"])["counts"]["planned"] == 38


def test_preferences_are_the_stricter_limit(runtime: Runtime, shop: Shop) -> None:
    from hongyan.contacts import service as contact_service

    # by number: an import stores contacts in blind-index order, so ids do not follow numbers
    ids: dict[int, int] = {}
    with runtime.engine.connect() as conn:
        for i in (5, 6, 7):
            found = contact_service.find_id(conn, runtime.keyring, shop.tenant_id, shop.phones[i])
            assert found is not None
            ids[i] = found
    with runtime.engine.begin() as conn:
        caps.set_preference(conn, runtime.clock, shop.tenant_id, ids[5], "none", "page")
        caps.set_preference(conn, runtime.clock, shop.tenant_id, ids[6], "important", "page")
        caps.set_preference(conn, runtime.clock, shop.tenant_id, ids[7], "weekly", "page")
    camp = _create(runtime, shop)
    done = _launch(runtime, shop, camp["id"])
    assert done["counts"]["preference"] == 2 and done["counts"]["planned"] == 36
    camp2 = _create(runtime, shop, name="重要", important=True)
    done = _launch(runtime, shop, camp2["id"])
    # 5 refuses all; 7 had its one a week already; 6 takes important ones
    assert done["counts"]["preference"] == 1 and done["counts"]["over_cap"] == 1
    assert ids[6] in {r.contact_id for r in _messages(runtime, camp2["id"])}


def test_pause_resume_cancel_act_on_planned_messages(runtime: Runtime, shop: Shop) -> None:
    camp = _create(runtime, shop)
    _launch(runtime, shop, camp["id"])
    t = shop.tenant_id
    with runtime.engine.begin() as conn:
        with pytest.raises(Conflict):
            campaigns.resume(conn, runtime.clock, t, camp["id"], actor="t")
        paused = campaigns.pause(conn, runtime.clock, t, camp["id"], actor="t")
    assert paused["state"] == "paused" and paused["moved"] == 38
    assert {r.state for r in _messages(runtime, camp["id"])} == {State.HELD.value}
    with runtime.engine.begin() as conn:
        resumed = campaigns.resume(conn, runtime.clock, t, camp["id"], actor="t")
    assert resumed["moved"] == 38
    assert {r.state for r in _messages(runtime, camp["id"])} == {"planned"}
    with runtime.engine.begin() as conn:
        cancelled = campaigns.cancel(conn, runtime.clock, t, camp["id"], actor="t")
    assert cancelled["state"] == "cancelled" and cancelled["moved"] == 38
    assert {r.state for r in _messages(runtime, camp["id"])} == {"cancelled"}
    with runtime.engine.begin() as conn, pytest.raises(Conflict):
        campaigns.cancel(conn, runtime.clock, t, camp["id"], actor="t")


def test_bad_input_is_refused_before_anything(runtime: Runtime, shop: Shop) -> None:
    with pytest.raises(ScheduleInvalid):
        _create(runtime, shop, schedule={"kind": "at", "at": "2020-01-01T10:00:00"})
    with pytest.raises(ScheduleInvalid):
        _create(
            runtime,
            shop,
            schedule={
                "kind": "recurring",
                "every": "month",
                "rule": None,
                "day": 31,
                "until": "2026-11-20",
            },
        )
    with pytest.raises(WindowInvalid):
        _create(runtime, shop, window={"start": "10:00", "end": "10:00"})
    with pytest.raises(TemplateNotApproved):
        _create(runtime, shop, variants=[{"template_version_id": 999_999}])
    with pytest.raises(campaigns.EmptyAudience):
        from hongyan.audience import segments

        with runtime.engine.begin() as conn:
            seg = segments.create(
                conn, runtime.clock, shop.tenant_id, name="nobody",
                rule={"field": "country", "op": "eq", "value": "US"}, actor="t",
            )  # fmt: skip
        _create(runtime, shop, segment=seg["id"])
    _create(runtime, shop)
    with pytest.raises(Conflict):
        _create(runtime, shop)
    with runtime.engine.connect() as conn:
        assert (
            conn.execute(
                unscoped(sa.select(sa.func.count()).select_from(campaigns_table), "t")
            ).scalar()
            == 1
        )


def test_other_tenants_campaigns_are_not_found(runtime: Runtime, shop: Shop) -> None:
    camp = _create(runtime, shop)
    other = make_shop(runtime, 3, slug="other", opted_out=0, without_consent=0)
    with runtime.engine.begin() as conn, pytest.raises(NotFound):
        campaigns.launch(
            conn, runtime.clock, runtime.keyring, other.tenant_id, camp["id"], actor="t"
        )


def test_an_uploaded_list(runtime: Runtime, shop: Shop) -> None:
    picked = [*shop.phones[:5], "+8613300000000"]
    camp = _create(runtime, shop, segment=None, phones=picked)
    done = _launch(runtime, shop, camp["id"])
    assert done["counts"]["planned"] == 4  # 0 opted out; one number is nobody's
    assert done["counts"]["suppressed"] == 1 and done["counts"]["not_a_contact"] == 1


def test_link_placeholders_wait_for_the_tracking_hook(runtime: Runtime, shop: Shop) -> None:
    body = "【鸿雁茶饮】{name|您好}，专属券已到账，点击{link} 领取，本周有效，回T退订"
    version = approved_version(runtime, shop.tenant_id, body)
    camp = _create(
        runtime,
        shop,
        variants=[{"template_version_id": version, "link_url": "https://shop.example/x"}],
    )
    tracking = extras.active()
    extras.unregister("tracking")  # the platform's own hook, connected by campaigns.service
    try:
        with pytest.raises(extras.ExtrasUnavailable):
            _launch(runtime, shop, camp["id"])
    finally:
        assert tracking is not None
        extras.register("tracking", tracking)
    assert _messages(runtime, camp["id"]) == []
    seen: list[extras.PerRecipientRequest] = []

    def links(conn: sa.Connection, req: extras.PerRecipientRequest) -> dict[str, list[str]]:
        seen.append(req)
        return {"link": [f"https://hy.cx/{c:07d}" for c in req.contact_ids]}

    extras.register("test", links)
    try:
        _launch(runtime, shop, camp["id"])
    finally:
        extras.unregister("test")
    rows = _messages(runtime, camp["id"])
    assert len(rows) == 38
    assert all(f"https://hy.cx/{r.contact_id:07d} " in r.body for r in rows)
    assert seen[0].link_url == "https://shop.example/x" and seen[0].variant == "A"


def test_scheduled_and_recurring_campaigns_run_from_the_scheduler(
    runtime: Runtime, shop: Shop
) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    at = _create(runtime, shop, name="at", schedule={"kind": "at", "at": "2026-11-11T12:00:00"})
    assert _launch(runtime, shop, at["id"])["state"] == "scheduled"
    every = _create(
        runtime, shop, name="每月18日",
        schedule={"kind": "recurring", "every": "month", "day": 18, "time": "10:00"},
    )  # fmt: skip
    assert _launch(runtime, shop, every["id"])["next_run_at"] == datetime(
        2026, 11, 18, 2, 0, tzinfo=UTC
    )
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {}
    clock.set(datetime(2026, 11, 11, 4, 0, tzinfo=UTC))  # 12:00
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"launched": 1}
    assert len(_messages(runtime, at["id"])) == 38
    # the messages go out: the campaign completes
    with runtime.engine.begin() as conn:
        conn.execute(unscoped(sa.update(messages).values(state="delivered"), "test: sent"))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"completed": 1}
    clock.set(datetime(2026, 11, 18, 2, 0, tzinfo=UTC))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"launched": 1}
    with runtime.engine.connect() as conn:
        again = campaigns.get(conn, shop.tenant_id, every["id"])
        runs = conn.execute(unscoped(sa.select(campaign_runs.c.run_no), "t")).scalars().all()
    assert again["state"] == "running" and again["next_run_at"] == datetime(
        2026, 12, 18, 2, 0, tzinfo=UTC
    )
    assert sorted(runs) == [1, 1]


def test_ab_test_picks_the_planted_better_variant(runtime: Runtime, shop: Shop) -> None:
    """Two variants to 20 % each; A's messages are delivered, most of B's are not; when the
    wait is over the scheduler decides for A by the two-proportion test and sends the rest A."""
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    camp = _create(
        runtime, shop,
        variants=[{"template_version_id": v} for v in shop.versions[:2]],
        ab={"share": 0.2, "metric": "delivery_rate", "wait_hours": 2, "min_trials": 5},
    )  # fmt: skip
    done = _launch(runtime, shop, camp["id"])
    assert done["phase"] == "test" and done["counts"]["planned"] == 16
    assert done["counts"]["by_variant"] == {"A": 8, "B": 8}
    assert done["counts"]["waiting_for_winner"] == 22
    rows = _messages(runtime, camp["id"])
    assert {r.source for r in rows} == {"ab_test"}
    b_rows = sorted(r.id for r in rows if r.variant == "B")
    with runtime.engine.begin() as conn:
        conn.execute(
            unscoped(
                sa.update(messages).where(messages.c.variant == "A").values(state="delivered"),
                "test: receipts",
            )
        )
        conn.execute(
            unscoped(
                sa.update(messages)
                .where(messages.c.id.in_(b_rows[:6]))
                .values(state="undelivered"),
                "test: receipts",
            )
        )
        conn.execute(
            unscoped(
                sa.update(messages).where(messages.c.id.in_(b_rows[6:])).values(state="delivered"),
                "test: receipts",
            )
        )
    clock.advance(timedelta(hours=1))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {}  # still waiting
    clock.advance(timedelta(hours=1))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"decided": 1}
    with runtime.engine.connect() as conn:
        st = campaigns.status(conn, clock, shop.tenant_id, camp["id"])
    decision = st["decision"]
    assert decision["winner"] == "A" and decision["chosen_by"] == "test"
    assert decision["confidence"] > 0.95 and "p ≤" in decision["reason"]["en"]
    assert {e["variant"]: e["trials"] for e in decision["estimates"]} == {"A": 8, "B": 8}
    assert st["phase"] == "rest" and st["counts"]["planned"] == 22
    rest = [r for r in _messages(runtime, camp["id"]) if r.source == "campaign"]
    assert len(rest) == 22 and {r.variant for r in rest} == {"A"}
    # every contact got exactly one message
    everyone = [r.contact_id for r in _messages(runtime, camp["id"])]
    assert len(everyone) == len(set(everyone)) == 38


def test_ab_test_without_a_clear_winner_waits_for_the_marketer(
    runtime: Runtime, shop: Shop
) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    camp = _create(
        runtime, shop,
        variants=[{"template_version_id": v} for v in shop.versions],
        ab={"share": 0.1, "metric": "delivery_rate", "wait_hours": 1, "min_trials": 3},
    )  # fmt: skip
    _launch(runtime, shop, camp["id"])
    with runtime.engine.begin() as conn:
        conn.execute(unscoped(sa.update(messages).values(state="delivered"), "test: receipts"))
    clock.advance(timedelta(hours=1))
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"decided": 1}
    with runtime.engine.connect() as conn:
        st = campaigns.get(conn, shop.tenant_id, camp["id"])
    assert st["decision"]["winner"] is None and st["phase"] == "test"
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {}  # not completed
    with runtime.engine.begin() as conn:
        marked = campaigns.begin_decide(
            conn, clock, shop.tenant_id, camp["id"], winner="C", actor="t"
        )
    assert marked["state"] == "deciding" and marked["decision"]["chosen_by"] == "t"
    chosen = launching.run(
        runtime.engine, clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t",
        kind="decide",
    )  # fmt: skip
    assert chosen is not None and chosen["counts"]["by_variant"] == {"C": 38 - 12}


def test_notification_campaigns_are_not_held_by_quiet_hours(runtime: Runtime, shop: Shop) -> None:
    from hongyan.contacts import suppression

    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 11, 11, 14, 0, tzinfo=UTC))  # 22:00 in Shanghai
    with runtime.engine.begin() as conn:
        suppression.record_consent(
            conn, clock, runtime.keyring,
            [suppression.ConsentChange(shop.tenant_id, p, "notification", "granted", "s", "t", "t")
             for p in shop.phones[:5]],
        )  # fmt: skip
    version = approved_version(
        runtime, shop.tenant_id, "【鸿雁茶饮】{name|您好}，您预约的门店自提订单已备好。",
        category="notification",
    )  # fmt: skip
    camp = _create(
        runtime, shop, category="notification", variants=[{"template_version_id": version}],
        phones=shop.phones[:5], segment=None,
    )  # fmt: skip
    done = _launch(runtime, shop, camp["id"])
    rows = _messages(runtime, camp["id"])
    # the first number opted out of marketing, which does not stop notifications
    assert done["counts"]["planned"] == 5 and done["counts"]["suppressed"] == 0
    assert rows[0].due_at == clock.now() and {r.lane for r in rows} == {1}


def test_weights_split_the_audience() -> None:
    camp = {"variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 3}], "salt": 987_654}
    order, boundary = campaigns._assign(list(range(1, 20_001)), camp, "full")
    share = sum(1 for _c, v in order if v == "B") / len(order)
    assert boundary is None and 0.73 < share < 0.77
    again, _ = campaigns._assign(list(range(1, 20_001)), camp, "full")
    assert again == order  # stable: a contact keeps its variant


def test_a_launch_that_fails_halfway_leaves_nothing(
    runtime: Runtime, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 10; the link hook breaks on the third: no message, no audience, still a draft."""
    from hongyan.campaigns import materialise

    monkeypatch.setattr(materialise, "BATCH", 10)
    body = "【鸿雁茶饮】{name|您好}，专属券已到账，点击{link} 领取，本周有效，回T退订"
    version = approved_version(runtime, shop.tenant_id, body)
    camp = _create(
        runtime, shop, variants=[{"template_version_id": version, "link_url": "https://s.example"}]
    )
    calls: list[int] = []

    def links(conn: sa.Connection, req: extras.PerRecipientRequest) -> dict[str, list[str]]:
        calls.append(len(req.contact_ids))
        if len(calls) == 3:
            return {"link": ["https://hy.cx/x"] * (len(req.contact_ids) - 1)}  # one short
        return {"link": [f"https://hy.cx/{c:07d}" for c in req.contact_ids]}

    extras.register("halfway", links)
    try:
        with pytest.raises(extras.ExtrasBroken):
            _launch(runtime, shop, camp["id"])
    finally:
        extras.unregister("halfway")
    assert len(calls) == 3
    assert _messages(runtime) == []
    with runtime.engine.connect() as conn:
        assert (
            conn.execute(unscoped(sa.select(sa.func.count()).select_from(audiences), "t")).scalar()
            == 0
        )
        assert campaigns.get(conn, shop.tenant_id, camp["id"])["state"] == "draft"

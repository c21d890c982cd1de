"""Background launches (the console's) and A/B decisions on both databases: the campaign is
``launching`` / ``deciding`` until the background run materialises it, its progress is
reported after each batch, a failure comes back (a launch to draft, a decision to the test
waiting) with the error and nothing planned, a cancel wins, the scheduler finishes one whose
process died once the lease has passed, and two decisions at once send the rest once."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.campaigns import launching
from hongyan.campaigns import service as campaigns
from hongyan.clock import FixedClock
from hongyan.contacts import suppression
from hongyan.db.scope import unscoped
from hongyan.db.tables import messages
from hongyan.runtime import Runtime
from tests.campaigns.support import Shop, make_shop


def _draft(runtime: Runtime, shop: Shop, name: str = "会员日") -> dict[str, Any]:
    with runtime.engine.begin() as conn:
        return campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, name=name,
            segment=shop.segment_id, variants=[{"template_version_id": shop.versions[0]}],
            actor="t",
        )  # fmt: skip


def _mark(runtime: Runtime, shop: Shop, cid: int) -> dict[str, Any]:
    with runtime.engine.begin() as conn:
        return campaigns.begin_launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, cid, actor="t"
        )


def _count(runtime: Runtime, cid: int) -> int:
    with runtime.engine.connect() as conn:
        return int(
            conn.execute(
                unscoped(sa.select(sa.func.count()).where(messages.c.campaign_id == cid), "test")
            ).scalar_one()
        )


def _get(runtime: Runtime, shop: Shop, cid: int) -> dict[str, Any]:
    with runtime.engine.connect() as conn:
        return campaigns.get(conn, shop.tenant_id, cid)


def test_marked_then_launched_in_the_background(runtime: Runtime) -> None:
    shop = make_shop(runtime)
    camp = _draft(runtime, shop)
    marked = _mark(runtime, shop, camp["id"])
    assert marked["state"] == "launching" and _count(runtime, camp["id"]) == 0
    assert marked["next_run_at"] == runtime.clock.now() + campaigns.LAUNCH_LEASE
    thread = launching.start(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
    )
    thread.join(60)
    done = _get(runtime, shop, camp["id"])
    assert done["state"] == "running" and done["counts"]["planned"] == 38
    assert done["next_run_at"] is None and _count(runtime, camp["id"]) == 38
    assert launching.progress(shop.tenant_id, camp["id"]) is None  # over
    # a second run (another process, the scheduler) finds it launched: nothing twice
    assert launching.run(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
    ) == _get(runtime, shop, camp["id"])
    assert _count(runtime, camp["id"]) == 38
    # a schedule for later is not a background job: it is handed to the scheduler at once
    later = _draft(runtime, shop, "晚些")
    at = (runtime.clock.now() + timedelta(days=1)).isoformat()
    with runtime.engine.begin() as conn:
        conn.execute(
            unscoped(
                sa.update(campaigns.campaigns)
                .where(campaigns.campaigns.c.id == later["id"])
                .values(schedule={"kind": "at", "zone": "Asia/Shanghai", "at": at}),
                "test",
            )
        )
    assert _mark(runtime, shop, later["id"])["state"] == "scheduled"


def test_progress_after_each_batch(runtime: Runtime) -> None:
    from hongyan.campaigns import materialise

    shop = make_shop(runtime, 12, opted_out=0, without_consent=0)
    camp = _draft(runtime, shop)
    seen: list[tuple[int, int]] = []
    batch, materialise.BATCH = materialise.BATCH, 5
    try:
        with runtime.engine.begin() as conn:
            campaigns.launch_now(
                conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t",
                progress=lambda done, total: seen.append((done, total)),
            )  # fmt: skip
    finally:
        materialise.BATCH = batch
    assert seen == [(5, 12), (10, 12), (12, 12)]


def test_a_failed_launch_comes_back_as_a_draft_with_the_error(runtime: Runtime) -> None:
    shop = make_shop(runtime, 3, opted_out=0, without_consent=0)
    camp = _draft(runtime, shop)
    _mark(runtime, shop, camp["id"])
    with runtime.engine.begin() as conn:  # everyone opts out before it runs
        suppression.add(
            conn,
            runtime.clock,
            runtime.keyring,
            [
                suppression.NewSuppression(shop.tenant_id, p, "opt_out", "reply")
                for p in shop.phones
            ],
        )
    assert (
        launching.run(
            runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
        is None
    )
    back = _get(runtime, shop, camp["id"])
    assert back["state"] == "draft" and back["next_run_at"] is None
    assert back["counts"]["error"]["code"] == "campaign_audience_empty"
    assert _count(runtime, camp["id"]) == 0


def test_cancelled_while_launching_plans_nothing(runtime: Runtime) -> None:
    shop = make_shop(runtime, 3, opted_out=0, without_consent=0)
    camp = _draft(runtime, shop)
    _mark(runtime, shop, camp["id"])
    with runtime.engine.begin() as conn:
        campaigns.cancel(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")
    launching.run(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
    )
    assert _get(runtime, shop, camp["id"])["state"] == "cancelled"
    assert _count(runtime, camp["id"]) == 0


def test_the_scheduler_finishes_a_launch_whose_process_died(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime)
    camp = _draft(runtime, shop)
    _mark(runtime, shop, camp["id"])  # ... and the process that marked it never ran it
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {}  # within its lease
    clock.advance(campaigns.LAUNCH_LEASE)
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"launched": 1}
    done = _get(runtime, shop, camp["id"])
    assert done["state"] == "running" and _count(runtime, camp["id"]) == 38


# -- A/B decisions in the background -------------------------------------------------------------


def _ab_test(runtime: Runtime, shop: Shop, name: str = "二选一") -> dict[str, Any]:
    """An A/B campaign in its test phase: 8 + 8 of the 38 eligible sent, 22 waiting."""
    with runtime.engine.begin() as conn:
        camp = campaigns.create(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, name=name,
            segment=shop.segment_id,
            variants=[{"template_version_id": v} for v in shop.versions[:2]],
            ab={"share": 0.2, "metric": "delivery_rate", "wait_hours": 2, "min_trials": 5},
            actor="t",
        )  # fmt: skip
        launched = campaigns.launch(
            conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
        )
    assert launched["phase"] == "test" and launched["counts"]["planned"] == 16
    return launched


def _begin_decide(runtime: Runtime, shop: Shop, cid: int, winner: str | None) -> dict[str, Any]:
    with runtime.engine.begin() as conn:
        return campaigns.begin_decide(
            conn, runtime.clock, shop.tenant_id, cid, winner=winner, actor="t"
        )


def _decide_in_background(runtime: Runtime, shop: Shop, cid: int) -> dict[str, Any] | None:
    return launching.run(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, cid, actor="t",
        kind="decide",
    )  # fmt: skip


def _by_state(runtime: Runtime, cid: int) -> dict[str, int]:
    m = messages.c
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            unscoped(
                sa.select(m.state, sa.func.count()).where(m.campaign_id == cid).group_by(m.state),
                "test",
            )
        ).all()
    return {str(s): int(n) for s, n in rows}


def test_a_decision_is_recorded_then_the_rest_sent_in_the_background(runtime: Runtime) -> None:
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    marked = _begin_decide(runtime, shop, camp["id"], "B")
    # recorded at once, nothing of the rest written yet
    assert marked["state"] == "deciding" and marked["phase"] == "test"
    assert marked["next_run_at"] == runtime.clock.now() + campaigns.LAUNCH_LEASE
    decision = marked["decision"]
    assert decision["winner"] == "B" and decision["chosen_by"] == "t"
    assert decision["prior_state"] == "running" and decision["suggested"] is None
    assert _count(runtime, camp["id"]) == 16
    # a second decision while this one is under way is refused: nothing twice
    with pytest.raises(campaigns.DecisionUnderWay):
        _begin_decide(runtime, shop, camp["id"], "A")
    thread = launching.start(
        runtime.engine, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t",
        kind="decide",
    )  # fmt: skip
    thread.join(60)
    done = _get(runtime, shop, camp["id"])
    assert done["state"] == "running" and done["phase"] == "rest"
    assert done["counts"]["planned"] == 22 and done["counts"]["by_variant"] == {"B": 22}
    assert done["next_run_at"] is None and _count(runtime, camp["id"]) == 38
    # another runner (the scheduler, another process) finds it done
    assert _decide_in_background(runtime, shop, camp["id"]) == done
    assert _count(runtime, camp["id"]) == 38
    with pytest.raises(campaigns.CampaignState):
        _begin_decide(runtime, shop, camp["id"], "A")  # decided: no test waits any more
    assert _count(runtime, camp["id"]) == 38


def test_a_paused_campaign_decided_stays_paused(runtime: Runtime) -> None:
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    with runtime.engine.begin() as conn:
        campaigns.pause(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")
    assert _begin_decide(runtime, shop, camp["id"], "A")["decision"]["prior_state"] == "paused"
    done = _decide_in_background(runtime, shop, camp["id"])
    assert done is not None and done["state"] == "paused" and done["phase"] == "rest"
    assert _by_state(runtime, camp["id"]) == {"held": 38}  # the rest held with the test
    with runtime.engine.begin() as conn:
        campaigns.resume(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")
    assert _by_state(runtime, camp["id"]) == {"planned": 38}


def test_a_failed_decision_leaves_the_test_waiting_with_the_error(runtime: Runtime) -> None:
    from hongyan.campaigns import caps
    from hongyan.db.tables import contacts

    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    _begin_decide(runtime, shop, camp["id"], "B")
    with runtime.engine.begin() as conn:  # everybody asks for no more marketing meanwhile
        ids = conn.execute(
            unscoped(sa.select(contacts.c.id).where(contacts.c.tenant_id == shop.tenant_id), "t")
        ).scalars()
        for cid in ids:
            caps.set_preference(conn, runtime.clock, shop.tenant_id, int(cid), "none", "page")
    assert _decide_in_background(runtime, shop, camp["id"]) is None
    back = _get(runtime, shop, camp["id"])
    assert back["state"] == "running" and back["phase"] == "test" and back["next_run_at"] is None
    decision = back["decision"]
    assert decision["winner"] is None and decision["tried"] == "B"
    assert decision["error"]["code"] == "campaign_audience_empty"
    assert back["counts"]["planned"] == 16 and _count(runtime, camp["id"]) == 16
    # the marketer can decide again; the error goes with the new decision
    assert "error" not in _begin_decide(runtime, shop, camp["id"], "A")["decision"]


def test_cancelled_while_deciding_plans_nothing(runtime: Runtime) -> None:
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    _begin_decide(runtime, shop, camp["id"], "A")
    with runtime.engine.begin() as conn:
        campaigns.cancel(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")
    _decide_in_background(runtime, shop, camp["id"])
    assert _get(runtime, shop, camp["id"])["state"] == "cancelled"
    assert _by_state(runtime, camp["id"]) == {"cancelled": 16}


def test_a_cancel_while_the_rest_is_written_wins(runtime: Runtime) -> None:
    """The cancel commits while the decision is writing (between two of its batches): the
    decision's closing compare-and-set finds the campaign cancelled and rolls back."""
    from hongyan.campaigns import materialise

    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    _begin_decide(runtime, shop, camp["id"], "A")
    cancelled: list[int] = []

    def cancel_once(done: int, total: int) -> None:
        if not cancelled:
            with runtime.engine.begin() as conn:  # another request, its own transaction
                cancelled.append(
                    campaigns.cancel(conn, runtime.clock, shop.tenant_id, camp["id"], actor="t")[
                        "moved"
                    ]
                )

    if runtime.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: a cancel waits for the decision to commit")
    batch, materialise.BATCH = materialise.BATCH, 5
    try:
        with pytest.raises(campaigns.CampaignState), runtime.engine.begin() as conn:
            campaigns.decide_now(
                conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t",
                progress=cancel_once,
            )  # fmt: skip
    finally:
        materialise.BATCH = batch
    assert cancelled == [16]
    assert _get(runtime, shop, camp["id"])["state"] == "cancelled"
    assert _by_state(runtime, camp["id"]) == {"cancelled": 16}


def test_the_scheduler_resumes_a_decision_whose_process_died(runtime: Runtime) -> None:
    clock = runtime.clock
    assert isinstance(clock, FixedClock)
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    _begin_decide(runtime, shop, camp["id"], "B")  # ... and its process never sent the rest
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {}  # within its lease
    clock.advance(campaigns.LAUNCH_LEASE)
    assert campaigns.tick(runtime.engine, clock, runtime.keyring) == {"decided": 1}
    done = _get(runtime, shop, camp["id"])
    assert done["state"] == "running" and done["phase"] == "rest"
    assert done["counts"]["by_variant"] == {"B": 22} and _count(runtime, camp["id"]) == 38


def test_two_decisions_at_once_materialise_the_rest_once(runtime: Runtime) -> None:
    """Two marketers decide at the same instant (on PostgreSQL truly at once): one decision is
    recorded, the other refused; then two runners (two processes) send the rest at the same
    instant: one writes it, the other finds it done."""
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def decide(winner: str) -> None:
        barrier.wait(10)
        try:
            with runtime.engine.begin() as conn:
                outcomes[winner] = campaigns.begin_decide(
                    conn, runtime.clock, shop.tenant_id, camp["id"], winner=winner, actor=winner
                )["state"]
        except campaigns.DecisionUnderWay as exc:
            outcomes[winner] = exc.code

    threads = [threading.Thread(target=decide, args=(w,)) for w in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes.values()) == ["campaign_state", "deciding"], outcomes
    winner = next(w for w, o in outcomes.items() if o == "deciding")
    assert _get(runtime, shop, camp["id"])["decision"]["winner"] == winner

    runs: list[dict[str, Any]] = []

    def send_rest() -> None:
        barrier.wait(10)
        with runtime.engine.begin() as conn:
            runs.append(
                campaigns.decide_now(
                    conn, runtime.clock, runtime.keyring, shop.tenant_id, camp["id"], actor="t"
                )
            )

    threads = [threading.Thread(target=send_rest) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(runs) == 2 and all(r["state"] == "running" for r in runs)
    assert _count(runtime, camp["id"]) == 38
    with runtime.engine.connect() as conn:
        m = messages.c
        per_contact = conn.execute(
            unscoped(
                sa.select(m.contact_id, sa.func.count())
                .where(m.campaign_id == camp["id"])
                .group_by(m.contact_id)
                .having(sa.func.count() > 1),
                "test",
            )
        ).all()
    assert per_contact == []
    assert _get(runtime, shop, camp["id"])["counts"]["by_variant"] == {winner: 22}


def test_a_pause_landing_during_a_decision_is_named_as_such(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision's compare-and-set finds the campaign moved by a pause committed while the
    evidence was read: the marketer is told the campaign changed, not that another decision
    is under way, and nothing is decided."""
    if runtime.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: the pause would wait for the decision to commit")
    shop = make_shop(runtime)
    camp = _ab_test(runtime, shop)
    evidence = campaigns._evidence

    def pause_meanwhile(*args: Any, **kwargs: Any) -> Any:
        with runtime.engine.begin() as other:
            campaigns.pause(other, runtime.clock, shop.tenant_id, camp["id"], actor="u")
        return evidence(*args, **kwargs)

    monkeypatch.setattr(campaigns, "_evidence", pause_meanwhile)
    with pytest.raises(campaigns.CampaignState) as raised:
        _begin_decide(runtime, shop, camp["id"], "A")
    assert not isinstance(raised.value, campaigns.DecisionUnderWay)
    assert "paused" in raised.value.body()["message"]["en"]
    after = _get(runtime, shop, camp["id"])
    assert after["state"] == "paused" and after["phase"] == "test"

"""Background launches (the console's) on both databases: the campaign is ``launching`` until
the background run materialises it, its progress is reported after each batch, a failure comes
back to draft with the error (nothing planned), a cancel before it runs wins, and the scheduler
launches one whose process died once the lease has passed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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

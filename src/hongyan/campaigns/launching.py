"""Work on a campaign that runs in the background: the console's launches, and the rest of an
A/B test's audience once a winner is chosen (the console's, the API's and the scheduler's
decisions). The campaign shows ``launching`` / ``deciding`` and the live status page its
progress, and an error comes back to the page.

The request marks the campaign (:func:`hongyan.campaigns.service.begin_launch` or
:func:`~hongyan.campaigns.service.begin_decide`, in the request's transaction) and once that has
committed :func:`start` runs :func:`run` in a thread of the serving process, the way contact
imports run. The work itself is one transaction (:func:`~hongyan.campaigns.service.launch_now`
for a launch, :func:`~hongyan.campaigns.service.decide_now` for a decision: a failure leaves no
message behind), so its progress cannot be read from the database by anybody else while it
runs: it is kept here, in the process, per campaign (the audience step, then messages written
of the total after each batch of 5,000), and the status page served by this process shows it.
A launch that fails puts the campaign back to ``draft`` with the error
(:func:`~hongyan.campaigns.service.launch_failed`); a decision that fails leaves the A/B test
waiting for a decision, in the state it was in, with the error
(:func:`~hongyan.campaigns.service.decide_failed`). Either whose process died is run by the
scheduler after the lease (``LAUNCH_LEASE``).

Each job runs only if the campaign is still in its marked state under the tenant's cap lock,
and ends with a compare-and-set on it: a cancel wins, and a second runner (another process, the
scheduler) finds the work done and does nothing.

On SQLite the work holds the single writer until it commits: pages that only read (the
status page, every session check) go on meanwhile, writes wait their turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import Connection, Engine

from hongyan.campaigns import service as campaigns
from hongyan.clock import Clock
from hongyan.security.keyring import KeyRing

log = logging.getLogger(__name__)
_live: dict[tuple[int, int], dict[str, Any]] = {}
_lock = threading.Lock()

Kind = Literal["launch", "decide"]


@dataclass(frozen=True)
class Job:
    """What a kind of background work does, and what a failure does to the campaign."""

    work: Callable[..., dict[str, Any]]  # (conn, clock, keyring, tenant, campaign, *, actor,
    #                                       progress) in one transaction
    failed: Callable[[Engine, Clock, int, int, BaseException], None]


def _launch(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, campaign_id: int, *,
    actor: str, progress: Callable[[int, int], None],
) -> dict[str, Any]:  # fmt: skip
    return campaigns.launch_now(
        conn, clock, keyring, tenant_id, campaign_id, actor=actor, expect="launching",
        progress=progress,
    )  # fmt: skip


JOBS: dict[str, Job] = {
    "launch": Job(_launch, campaigns.launch_failed),
    "decide": Job(campaigns.decide_now, campaigns.decide_failed),
}


def progress(tenant_id: int, campaign_id: int) -> dict[str, Any] | None:
    """How far this process's work on the campaign got: ``kind`` (launch, decide), ``stage``
    (``audience`` while the snapshot and caps run, then ``writing``), ``done`` and ``total``
    messages, ``seconds``."""
    with _lock:
        found = _live.get((tenant_id, campaign_id))
        if found is None:
            return None
        return {**found, "seconds": round(time.monotonic() - found["started"], 1)}


def busy(tenant_id: int, campaign_id: int) -> bool:
    """Whether this process is running work on the campaign now."""
    with _lock:
        return (tenant_id, campaign_id) in _live


def run(
    engine: Engine, clock: Clock, keyring: KeyRing, tenant_id: int, campaign_id: int, *,
    actor: str, kind: Kind = "launch",
) -> dict[str, Any] | None:  # fmt: skip
    """Do a marked campaign's work now, in this thread: launch a ``launching`` campaign, or send
    a ``deciding`` one's rest the winner. The campaign as it ends up, or None when the work
    failed (see the module doc) or this process is already doing it."""
    job = JOBS[kind]
    key = (tenant_id, campaign_id)
    with _lock:
        if key in _live:
            return None  # already running here
        _live[key] = {
            "kind": kind,
            "stage": "audience",
            "done": 0,
            "total": 0,
            "started": time.monotonic(),
        }

    def moved(done: int, total: int) -> None:
        with _lock:
            _live[key].update(stage="writing", done=done, total=total)

    try:
        with engine.begin() as conn:
            return job.work(
                conn, clock, keyring, tenant_id, campaign_id, actor=actor, progress=moved
            )
    except Exception as exc:
        log.info("campaign %s of tenant %s: %s failed: %s", campaign_id, tenant_id, kind, exc)
        job.failed(engine, clock, tenant_id, campaign_id, exc)
        return None
    finally:
        with _lock:
            _live.pop(key, None)


def start(
    engine: Engine, clock: Clock, keyring: KeyRing, tenant_id: int, campaign_id: int, *,
    actor: str, kind: Kind = "launch",
) -> threading.Thread:  # fmt: skip
    """Run :func:`run` in a daemon thread (call after the transaction that marked the campaign
    committed)."""
    thread = threading.Thread(
        target=run,
        args=(engine, clock, keyring, tenant_id, campaign_id),
        kwargs={"actor": actor, "kind": kind},
        name=f"{kind}-{campaign_id}",
        daemon=True,
    )
    thread.start()
    return thread

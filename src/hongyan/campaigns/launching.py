"""Launches that run in the background (the console's): the campaign shows ``launching`` and
the live status page its progress, and an error comes back to the page.

The console marks the campaign (:func:`hongyan.campaigns.service.begin_launch`, in the request's
transaction), and once that has committed :func:`start` runs :func:`run` in a thread of the
serving process, the way contact imports run: the launch itself is the same one-transaction
:func:`~hongyan.campaigns.service.launch_now` as the API's and the scheduler's (a failure
leaves no message behind), so its progress cannot be read from the database by anybody else
while it runs: it is kept here, in the process, per campaign (the audience step, then messages
written of the total after each batch of 5,000), and the status page served by this process
shows it. A launch that fails puts the campaign back to ``draft`` with the error; one whose
process died is launched by the scheduler after the lease (``LAUNCH_LEASE``).

On SQLite the launch holds the single writer until it commits: pages that only read (the
status page, every session check) go on meanwhile, writes wait their turn.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.engine import Engine

from hongyan.campaigns import service as campaigns
from hongyan.clock import Clock
from hongyan.security.keyring import KeyRing

log = logging.getLogger(__name__)
_live: dict[tuple[int, int], dict[str, Any]] = {}
_lock = threading.Lock()


def progress(tenant_id: int, campaign_id: int) -> dict[str, Any] | None:
    """How far this process's launch of the campaign got: ``stage`` (``audience`` while the
    snapshot and caps run, then ``writing``), ``done`` and ``total`` messages, ``seconds``."""
    with _lock:
        found = _live.get((tenant_id, campaign_id))
        if found is None:
            return None
        return {**found, "seconds": round(time.monotonic() - found["started"], 1)}


def run(
    engine: Engine, clock: Clock, keyring: KeyRing, tenant_id: int, campaign_id: int, *,
    actor: str,
) -> dict[str, Any] | None:  # fmt: skip
    """Launch a ``launching`` campaign now, in this thread; the campaign as it ends up, or None
    when the launch failed (the campaign is back to draft with the error)."""
    key = (tenant_id, campaign_id)
    with _lock:
        if key in _live:
            return None  # already running here
        _live[key] = {"stage": "audience", "done": 0, "total": 0, "started": time.monotonic()}

    def moved(done: int, total: int) -> None:
        with _lock:
            _live[key].update(stage="writing", done=done, total=total)

    try:
        with engine.begin() as conn:
            return campaigns.launch_now(
                conn, clock, keyring, tenant_id, campaign_id, actor=actor, expect="launching",
                progress=moved,
            )  # fmt: skip
    except Exception as exc:
        log.info("campaign %s of tenant %s: launch failed: %s", campaign_id, tenant_id, exc)
        campaigns.launch_failed(engine, clock, tenant_id, campaign_id, exc)
        return None
    finally:
        with _lock:
            _live.pop(key, None)


def start(
    engine: Engine, clock: Clock, keyring: KeyRing, tenant_id: int, campaign_id: int, *,
    actor: str,
) -> threading.Thread:  # fmt: skip
    """Run :func:`run` in a daemon thread (call after the transaction that marked the campaign
    ``launching`` committed)."""
    thread = threading.Thread(
        target=run,
        args=(engine, clock, keyring, tenant_id, campaign_id),
        kwargs={"actor": actor},
        name=f"launch-{campaign_id}",
        daemon=True,
    )
    thread.start()
    return thread

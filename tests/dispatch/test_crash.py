"""A dispatcher process killed with SIGKILL, again and again, loses nothing.

The test is the carrier: it runs the sandbox SMSC on its own event loop in a thread, so it can
count what the carrier received whatever happens to the platform's processes. It plans 20,000
messages to 20,000 numbers, runs ``hongyan dispatcher`` as a child process, kills it with SIGKILL
at random instants while messages are in flight and starts a new one each time, and waits until
every message is final. Then it compares the carrier's view with the platform's:

* every message is final, with the verdict of the receipt for the carrier id the platform
  recorded (a duplicate's own receipt, with its own random outcome, changed nothing);
* the carrier received every number exactly once, except messages that were in flight (leased,
  outcome not yet recorded) at a kill: the send-twice set that :mod:`hongyan.dispatch.dispatcher`
  documents, at most one batch per kill;
* every receipt the carrier sent is stored: on a recorded part, or kept as unmatched (the
  receipts of the duplicates' first copies, whose carrier ids were never recorded).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.clock import SystemClock
from hongyan.db import migrate
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import message_parts, messages, unmatched_receipts
from hongyan.dispatch.outbox import dest_context
from hongyan.runtime import Runtime
from hongyan.security.keyring import mask_phone
from hongyan.tenants import service
from tests.conftest import test_settings as settings_for

N = 20_000
KILLS = 5
BATCH = 500  # HONGYAN_DISPATCH_BATCH: the most a kill can leave in flight
LEASE = 2  # seconds: how long a killed dispatcher's messages wait for the next one
WHY = "the test reads every tenant's messages"
VERDICT = {"DELIVRD": "delivered", "UNDELIV": "undelivered", "EXPIRED": "expired"}


def _number(i: int) -> str:
    return f"86139{i:08d}"


def _plan(runtime: Runtime) -> dict[int, str]:
    """N messages to N distinct numbers, in one set-based insert; returns id → number."""
    with runtime.engine.begin() as conn:
        tenant = service.create_tenant(conn, runtime.clock, slug="crash", name="crash").id
        ctx = dest_context(tenant)
        now = runtime.clock.now()
        rows = [
            {
                "lane": 1,
                "category": "notification",
                "source": "test",
                "source_ref": _number(i),
                "dest_cipher": runtime.keyring.encrypt("+" + _number(i), ctx),
                "dest_index": runtime.keyring.blind_index("+" + _number(i), ctx),
                "dest_masked": mask_phone("+" + _number(i)),
                "body": f"【鸿雁】验证码 {i:06d}",
                "encoding": "ucs2",
                "parts": 1,
                "state": "planned",
                "due_at": now,
                "expires_at": now + timedelta(hours=1),
                "created_at": now,
            }
            for i in range(N)
        ]
        TenantScope(tenant).insert_many(conn, messages, rows)
        found = conn.execute(
            TenantScope(tenant).select(messages, messages.c.id, messages.c.source_ref)
        ).all()
    return {int(r.id): str(r.source_ref) for r in found}


class CarrierThread:
    """The sandbox SMSC on its own event loop, in a thread of the test process."""

    def __init__(self, config: SandboxConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.smsc = SandboxSmsc(config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        _, port = self._call(self.smsc.start())
        return port

    def stop(self) -> None:
        self._call(self.smsc.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(10)

    def snapshot(self) -> tuple[list[Any], list[Any]]:
        """Copies of what the carrier received and sent, taken on its own loop."""

        async def copy() -> tuple[list[Any], list[Any]]:
            return list(self.smsc.submits), list(self.smsc.receipts)

        result: tuple[list[Any], list[Any]] = self._call(copy())
        return result


@contextmanager
def carrier(config: SandboxConfig) -> Iterator[tuple[CarrierThread, int]]:
    c = CarrierThread(config)
    port = c.start()
    try:
        yield c, port
    finally:
        c.stop()


def _env(runtime: Runtime, port: int) -> dict[str, str]:
    s = runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(
        {
            "HONGYAN_ENV": "test",
            "HONGYAN_VAR_DIR": str(s.var_dir),
            "HONGYAN_DATABASE_URL": s.resolved_database_url(),
            "HONGYAN_DATA_KEYS": s.data_keys,
            "HONGYAN_ACTIVE_KEY": s.active_key,
            "HONGYAN_INDEX_KEY": s.index_key,
            "HONGYAN_SESSION_SECRET": s.session_secret,
            "HONGYAN_SMPP_URL": f"smpp://crash:pw@127.0.0.1:{port}",
            "HONGYAN_DISPATCH_LEASE_SECONDS": str(LEASE),
            "HONGYAN_DISPATCH_BATCH": str(BATCH),
        }
    )
    return env


def _dispatcher(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from hongyan.cli.main import app; app()", "dispatcher"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _states(runtime: Runtime) -> Counter[str]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            unscoped(sa.select(messages.c.state, sa.func.count()).group_by(messages.c.state), WHY)
        ).all()
    return Counter({r[0]: int(r[1]) for r in rows})


def _in_flight(runtime: Runtime, pid: int) -> set[int]:
    """What the dispatcher killed just now had in flight: leased by it and not yet recorded.

    (Messages a dispatcher killed earlier left leased are not among them: they wait for the
    lease to run out.)
    """
    owner = f"{socket.gethostname()}:{pid}"  # hongyan.dispatch.service.worker_name
    with runtime.engine.connect() as conn:
        return {
            int(r.id)
            for r in conn.execute(
                unscoped(
                    sa.select(messages.c.id).where(
                        messages.c.state == "sending", messages.c.lease_owner == owner
                    ),
                    WHY,
                )
            )
        }


def _wait(cond: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"{what} not reached in {seconds}s; dispatcher log:\n{tail}")
        time.sleep(0.05)


def test_sigkill_during_a_run_loses_nothing(tmp_path: Path, database_url: str) -> None:
    runtime = Runtime.create(settings_for(tmp_path, database_url), clock=SystemClock())
    try:
        migrate.upgrade(runtime.engine)
        number_of = _plan(runtime)
        _crash_and_check(runtime, number_of, tmp_path / "dispatcher.log")
    finally:
        runtime.close()


def _crash_and_check(runtime: Runtime, number_of: dict[int, str], log: Path) -> None:
    rng = random.Random(20261111)
    config = SandboxConfig(
        credentials={"crash": "pw"},
        receipt_delay=0.05,
        delivered=0.9,
        undeliverable=0.05,
        expired=0.05,
        seed=7,
    )
    started = time.monotonic()
    with carrier(config) as (smsc, port):
        env = _env(runtime, port)
        proc = _dispatcher(env, log)
        in_flight: list[set[int]] = []
        try:
            for kill in range(KILLS):
                # Somewhere in the run, while the dispatcher is busy: after a random share of
                # the messages has left the outbox (each kill further along than the last).
                goal = N * (kill + rng.uniform(0.3, 0.9)) / (KILLS + 1)
                _wait(
                    lambda goal=goal: _states(runtime)["planned"] <= N - goal,  # type: ignore[misc]
                    40,
                    f"progress before kill {kill + 1}",
                    log,
                )
                time.sleep(rng.uniform(0.0, 0.2))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                in_flight.append(_in_flight(runtime, proc.pid))
                proc = _dispatcher(env, log)
            _wait(
                lambda: sum(_states(runtime)[s] for s in ("planned", "sending", "submitted")) == 0,
                60,
                "every message final",
                log,
            )
            submits, receipts = smsc.snapshot()
            # Every receipt the carrier sent reaches the database (on a part, or kept).
            _wait(lambda: _stored(runtime) >= len(receipts), 20, "every receipt stored", log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        submits, receipts = smsc.snapshot()
    elapsed = time.monotonic() - started
    _check(runtime, number_of, in_flight, submits, receipts, elapsed)


def _stored(runtime: Runtime) -> int:
    """Receipts stored: parts that have one, plus distinct ids kept as unmatched."""
    with runtime.engine.connect() as conn:
        on_parts = conn.execute(
            unscoped(
                sa.select(sa.func.count())
                .select_from(message_parts)
                .where(message_parts.c.stat.is_not(None)),
                WHY,
            )
        ).scalar_one()
        kept = conn.execute(
            unscoped(sa.select(sa.func.count(sa.distinct(unmatched_receipts.c.carrier_id))), WHY)
        ).scalar_one()
    return int(on_parts) + int(kept)


def _check(
    runtime: Runtime,
    number_of: dict[int, str],
    in_flight: list[set[int]],
    submits: list[Any],
    receipts: list[Any],
    elapsed: float,
) -> None:
    with runtime.engine.connect() as conn:
        final = {
            int(r.id): (r.state, r.reason)
            for r in conn.execute(
                unscoped(sa.select(messages.c.id, messages.c.state, messages.c.reason), WHY)
            )
        }
        parts = conn.execute(
            unscoped(
                sa.select(
                    message_parts.c.message_id, message_parts.c.carrier_id, message_parts.c.stat
                ),
                WHY,
            )
        ).all()
        kept = {
            r.carrier_id
            for r in conn.execute(unscoped(sa.select(unmatched_receipts.c.carrier_id), WHY))
        }
    sent_to = Counter(s.destination for s in submits)
    receipt_of = {r.message_id: r.stat for r in receipts}
    ever_in_flight = set().union(*in_flight)
    duplicates = {mid for mid, number in number_of.items() if sent_to[number] > 1}
    print(
        f"\ncrash test on {runtime.engine.dialect.name}: {N} messages, {KILLS} SIGKILLs, "
        f"batch {BATCH}, {elapsed:.1f}s; in flight at each kill: "
        f"{[len(s) for s in in_flight]}; sent twice: {len(duplicates)} "
        f"(per kill: {[len(duplicates & s) for s in in_flight]}); "
        f"carrier submits {len(submits)}, receipts kept unmatched {len(kept)}"
    )

    # Every message is final, and the carrier got every number at least once.
    states = Counter(state for state, _ in final.values())
    assert set(states) <= set(VERDICT.values()), states
    assert set(final) == set(number_of)
    assert all(sent_to[number] >= 1 for number in number_of.values())
    assert set(sent_to) == set(number_of.values())

    # Exactly once, apart from the documented in-flight set: at most one batch per kill, and
    # a message sent k+1 times was in flight at k kills.
    assert all(len(s) <= BATCH for s in in_flight)
    assert len(duplicates) <= KILLS * BATCH
    assert duplicates <= ever_in_flight
    for mid in duplicates:
        assert sent_to[number_of[mid]] <= 1 + sum(mid in s for s in in_flight)
    assert len(submits) == N + sum(sent_to[number_of[mid]] - 1 for mid in duplicates)

    # The platform recorded one carrier id per message, and its verdict is that id's receipt.
    recorded: dict[int, list[str]] = {}
    for p in parts:
        recorded.setdefault(int(p.message_id), []).append(p.carrier_id)
    assert set(recorded) == set(number_of)
    assert all(len(ids) == 1 for ids in recorded.values()), "a message was recorded twice"
    for mid, (state, reason) in final.items():
        stat = receipt_of[recorded[mid][0]]
        assert state == VERDICT[stat], (mid, state, stat)
        if stat == "UNDELIV":
            assert reason == "invalid_number"
    assert all(p.stat == receipt_of[p.carrier_id] for p in parts)

    # The duplicates' first copies: their receipts are kept as unmatched, never applied.
    unrecorded = {s.message_id for s in submits} - {p.carrier_id for p in parts}
    assert len(unrecorded) == len(submits) - N
    assert kept == unrecorded

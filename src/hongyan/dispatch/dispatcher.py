"""The dispatcher: the only code that hands messages to carriers.

One pass (:meth:`Dispatcher.run_once`) claims a batch under a lease, drops what the suppression
list forbids, routes each message to a channel (:mod:`hongyan.dispatch.routing`: the tenant's
route, the number's carrier, failover away from a channel that just failed), paces each channel
(:mod:`hongyan.dispatch.pacing`), submits concurrently (each channel's window bounds what is in
flight), and records the outcome: ``submitted`` with one ``message_parts`` row per carrier id,
back to ``planned`` for a transient refusal (at once when another channel is ready, else with a
backoff), ``failed`` for a permanent one or after ``max_attempts``, ``expired`` when the validity
ran out before sending. Receipts and replies arrive on the channels' callbacks and are applied at
the end of the pass (:mod:`hongyan.dispatch.receipts`, :mod:`hongyan.dispatch.replies`).
The running dispatcher (:meth:`Dispatcher.run`) does the same work without the pass's turns:
it claims again while earlier messages are still being submitted, records outcomes as they come
and stores receipts as they arrive, with at most ``batch`` messages claimed and not yet recorded.

Which messages can be sent twice, exactly: a message whose submit reached the carrier but whose
``submitted`` record was never written. That happens when (a) the dispatcher process dies
between the carrier's acceptance and the commit of the record (at most the messages claimed
and not yet recorded: ``batch``), (b) its lease runs out while the submit is in flight (the
lease is 60 s against a 10 s response timeout, and a running dispatcher renews the leases of
what it holds every third of a lease, so only a process stalled for a whole lease; a claim on
paced channels is cut to what they can send in half a lease), or (c) the connection drops
after the carrier took a submit but before its response arrived (at most ``window`` per bind):
the submit fails as transient and the message is tried again. SMPP 3.4 has no idempotent submit
that would let us ask the carrier; a long message refused part-way is also sent again whole.
Everything else is sent once: a claim is exclusive (``FOR UPDATE SKIP LOCKED``), every state
change is compare-and-set, and a message whose record was written is never claimed again.

Receipts and replies are never lost either: a channel acknowledges one to the carrier only after
:meth:`Dispatcher.flush` has stored it, so one taken in by a process killed before that is sent
again by the carrier (one stored but not yet acknowledged comes twice and changes nothing).
``tests/dispatch/test_crash.py`` kills a dispatcher process again and again and checks all this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.campaigns.windows import Rules, next_allowed
from hongyan.channels import registry
from hongyan.channels.base import Channel, ChannelSpec, Inbound, Outgoing, Report, SubmitError
from hongyan.channels.service import Route
from hongyan.contacts import suppression
from hongyan.db.engine import BEGIN_IMMEDIATE, INDEX_PLANS
from hongyan.db.retry import retrying
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.sql import among, pg_array
from hongyan.db.tables import message_parts, messages
from hongyan.db.types import UTCDateTime
from hongyan.dispatch import outbox, receipts, replies, routing
from hongyan.dispatch.outbox import Claimed
from hongyan.dispatch.pacing import TokenBucket, share
from hongyan.dispatch.states import TRANSIENT, Lane, Reason, State, check_move, retry_delay
from hongyan.runtime import Runtime

log = logging.getLogger("hongyan.dispatch")
WHY = "the dispatcher serves every tenant"
T = TypeVar("T")
DEFAULT_QUIET = (ZoneInfo("Asia/Shanghai"), Rules())
GATHER = 0.02  # seconds the running dispatcher lets receipts gather before storing them
_TRANSIENT = frozenset(r.value for r in TRANSIENT)
STALE_EVERY = 1.0  # seconds between two looks for run-out leases


@cache
def _zone(name: str) -> ZoneInfo | None:
    """A recipient's zone by name (checked when stored; an unknown one falls back)."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        log.warning("unknown time zone %r on a message: the tenant's zone applies", name)
        return None


@dataclass
class _Batch:
    """What a claimed batch's messages share: the suppression verdicts looked up for them, the
    channels ready when it was claimed, and each route worked out once (tenant, lane, carrier
    and the channel that failed last decide it)."""

    blocked: dict[tuple[int, bytes], set[str]]
    ready: set[str]
    routes: dict[tuple[int, int, str | None, str | None], tuple[list[str], str | None]]


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    # submitted, transient, waiting (no channel up), failed, expired, suppressed, unroutable
    kind: str
    carrier_ids: list[str]
    channel: str | None = None
    reason: Reason | None = None
    code: str | None = None
    retry_now: bool = False
    due_at: datetime | None = None  # when a held message may go


class ChannelPool:
    """The channels one dispatcher runs, each with its token bucket."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        build: Callable[[ChannelSpec], Channel] = registry.build,
    ) -> None:
        self.runtime = runtime
        self.build = build
        self.specs: dict[str, ChannelSpec] = {}
        self.channels: dict[str, Channel] = {}
        self.buckets: dict[str, TokenBucket] = {}
        # What the channels handed over, each with a future resolved once it is stored: a
        # channel acknowledges to the carrier only then (see :meth:`Dispatcher.flush`).
        self.reports: list[tuple[str, Report, asyncio.Future[None]]] = []
        self.inbounds: list[tuple[str, Inbound, asyncio.Future[None]]] = []
        self.arrived = asyncio.Event()
        self.live_dispatchers = 1

    async def sync(self, specs: Sequence[ChannelSpec]) -> None:
        """Start new channels, stop removed or changed ones, update rates."""
        wanted = {s.name: s for s in specs if s.enabled}
        for name in list(self.channels):
            if wanted.get(name) != self.specs.get(name):
                await self._stop(name)
        for name, spec in wanted.items():
            if name in self.channels:
                continue
            try:
                channel = self.build(spec)
            except ValueError as exc:
                log.error("channel %s: %s", name, exc)
                continue
            self.specs[name] = spec
            self.channels[name] = channel
            self.buckets[name] = TokenBucket(share(spec.rate, self.live_dispatchers))
            await channel.start(self._report_sink(name), self._inbound_sink(name))
        self.set_live(self.live_dispatchers)

    def set_live(self, live: int) -> None:
        self.live_dispatchers = max(1, live)
        for name, bucket in self.buckets.items():
            rate = share(self.specs[name].rate, self.live_dispatchers)
            if rate != bucket.rate:
                bucket.set_rate(rate)

    def _report_sink(self, name: str) -> Callable[[Report], asyncio.Future[None]]:
        # A plain function returning the future (a task per receipt would cost more than the
        # receipt): the channel awaits it, and acknowledges to the carrier once it is resolved.
        def sink(report: Report) -> asyncio.Future[None]:
            stored = asyncio.get_running_loop().create_future()
            self.reports.append((name, report, stored))
            self.arrived.set()
            return stored

        return sink

    def _inbound_sink(self, name: str) -> Callable[[Inbound], asyncio.Future[None]]:
        def sink(inbound: Inbound) -> asyncio.Future[None]:
            stored = asyncio.get_running_loop().create_future()
            self.inbounds.append((name, inbound, stored))
            self.arrived.set()
            return stored

        return sink

    def ready(self) -> set[str]:
        return {n for n, c in self.channels.items() if c.ready}

    async def _stop(self, name: str) -> None:
        channel = self.channels.pop(name, None)
        self.specs.pop(name, None)
        self.buckets.pop(name, None)
        if channel is not None:
            await channel.stop()

    async def stop(self) -> None:
        for name in list(self.channels):
            await self._stop(name)


class Dispatcher:
    def __init__(
        self,
        runtime: Runtime,
        pool: ChannelPool,
        *,
        owner: str,
        batch: int = 200,
        lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 12,
    ) -> None:
        self.runtime = runtime
        self.pool = pool
        self.owner = owner
        self.batch = batch
        self.lease = lease
        self.max_attempts = max_attempts
        self.routes: dict[int, list[Route]] = {}
        self.extensions: dict[int, str] = {}
        # Each tenant's zone and quiet hours (marketing waits them out); unknown: the defaults.
        self.quiet: dict[int, tuple[ZoneInfo, Rules]] = {}
        # SQLite has one writer: this process's transactions take turns (PostgreSQL: at once).
        sqlite = runtime.engine.dialect.name == "sqlite"
        self._serial: asyncio.Lock | None = asyncio.Lock() if sqlite else None
        # (channel, carrier id) of parts submitted and not yet recorded: their receipts wait.
        self._unrecorded: set[tuple[str, str]] = set()
        self._next_stale = 0.0

    async def db_call(self, work: Callable[..., T], *args: Any) -> T:
        """Database work in a worker thread (one at a time on SQLite)."""
        if self._serial is None:
            return await asyncio.to_thread(work, *args)
        async with self._serial:
            return await asyncio.to_thread(work, *args)

    def _tx(self, body: Callable[[Connection], T], what: str) -> T:
        """``body`` in one writing transaction, run whole again after a deadlock, a locked
        SQLite, a lost connection (:func:`hongyan.db.retry.retrying`): a dispatcher outlives
        what a database does in normal life instead of exiting with its messages leased."""

        def once() -> T:
            with self._writing() as conn:
                return body(conn)

        return retrying(once, what=what)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that will write (on SQLite it waits for the write lock at BEGIN), its
        statements planned on indexes (see :data:`hongyan.db.engine.INDEX_PLANS`)."""
        with self.runtime.engine.connect() as conn:
            conn.execution_options(**{BEGIN_IMMEDIATE: True, INDEX_PLANS: True})
            with conn.begin():
                yield conn

    def _claim(
        self, limit: int, *, busy: bool = False
    ) -> tuple[list[Claimed], dict[tuple[int, bytes], set[str]]]:
        clock = self.runtime.clock
        # A busy dispatcher looks for run-out leases at most once a second (see outbox.claim):
        # a lease runs out at an instant, so that delays a takeover by a second at most.
        now = time.monotonic()
        stale = not busy or now >= self._next_stale
        if stale:
            self._next_stale = now + STALE_EVERY

        def body(conn: Connection) -> tuple[list[Claimed], dict[tuple[int, bytes], set[str]]]:
            claimed = outbox.claim(
                conn, clock, owner=self.owner, limit=limit, lease=self.lease, stale=stale
            )
            blocked = suppression.lookup(
                conn, ((c.tenant_id, c.dest_index) for c in claimed), clock.now()
            )
            return claimed, blocked

        return self._tx(body, "a claim")

    def _renew(self, ids: list[int]) -> None:
        self._tx(
            lambda conn: outbox.renew(
                conn, self.runtime.clock, owner=self.owner, ids=ids, lease=self.lease
            ),
            "a lease renewal",
        )

    def _claim_limit(self) -> int:
        """``batch``, or less when paced channels could not send that within half a lease."""
        rates = [b.rate for n, b in self.pool.buckets.items() if n in self.pool.channels]
        if not rates or any(r <= 0 for r in rates):
            return self.batch
        half_lease = self.lease.total_seconds() / 2
        return max(1, min(self.batch, int(sum(rates) * half_lease)))

    # -- one pass (tests, tools) -------------------------------------------------------------
    async def run_once(self) -> int:
        claimed, blocked = await self.db_call(self._claim, self._claim_limit())
        batch = _Batch(blocked, self.pool.ready(), {})
        outcomes = await asyncio.gather(*(self._send(c, batch) for c in claimed))
        if outcomes:
            await self.db_call(self._record, outcomes)
        await self.flush()
        return len(claimed)

    # -- the running dispatcher --------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, idle: float = 0.2) -> None:
        """Dispatch until ``stop`` is set, claiming, submitting, recording and storing receipts
        at the same time rather than in turn.

        At most ``batch`` messages are claimed and not yet recorded at any moment: that bounds
        what a killed process leaves in flight. A new claim is made as soon as a quarter of that
        room is free, while the messages claimed before are still being submitted; outcomes are
        recorded as they come, in groups, and receipts stored as they arrive.
        """
        outcomes: list[Outcome] = []
        sending: set[asyncio.Task[Outcome]] = set()
        held: set[int] = set()  # ids claimed and not yet recorded: their leases are renewed
        failures: list[BaseException] = []
        sent, room, recorded_all = asyncio.Event(), asyncio.Event(), asyncio.Event()
        state = {"outstanding": 0, "claiming": True, "recording": True}

        def finished(task: asyncio.Task[Outcome]) -> None:
            sending.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                failures.append(exc)
            else:
                outcome = task.result()
                if outcome.channel:
                    self._unrecorded.update((outcome.channel, i) for i in outcome.carrier_ids)
                outcomes.append(outcome)
            sent.set()

        async def claimer() -> None:
            try:
                while not stop.is_set() and not failures:
                    limit = self._claim_limit()
                    free = limit - state["outstanding"]
                    if free < max(1, limit // 4):
                        room.clear()
                        await _wait(room, idle)
                        continue
                    claimed, blocked = await self.db_call(partial(self._claim, busy=True), free)
                    if not claimed:
                        await _wait(stop, idle)
                        continue
                    state["outstanding"] += len(claimed)
                    held.update(c.id for c in claimed)
                    batch = _Batch(blocked, self.pool.ready(), {})
                    for c in claimed:
                        task = asyncio.create_task(self._send(c, batch))
                        sending.add(task)
                        task.add_done_callback(finished)
            finally:
                state["claiming"] = False
                sent.set()

        async def recorder() -> None:
            try:
                while state["claiming"] or sending or outcomes:
                    if not outcomes:
                        sent.clear()
                        await _wait(sent, idle)
                        continue
                    group = outcomes[:]
                    del outcomes[:]
                    await self.db_call(self._record, group)
                    for o in group:
                        self._unrecorded.difference_update((o.channel, i) for i in o.carrier_ids)
                        held.discard(o.claimed.id)
                    state["outstanding"] -= len(group)
                    room.set()
                    self.pool.arrived.set()  # receipts held back for these may go now
            finally:
                state["recording"] = False
                recorded_all.set()
                self.pool.arrived.set()

        async def storer() -> None:
            while state["recording"]:
                self.pool.arrived.clear()
                await self.flush()
                await _wait(self.pool.arrived, idle)
                # Let a few more arrive: one transaction for many receipts, not one each.
                await asyncio.sleep(min(idle, GATHER))

        async def renewer() -> None:
            # A live dispatcher's messages are not another's to take over, however slow the
            # carrier or the machine: every third of a lease, the leases of what it holds run on.
            every = self.lease.total_seconds() / 3
            while state["recording"]:
                await _wait(recorded_all, every)
                if held and state["recording"]:
                    await self.db_call(self._renew, list(held))

        workers = [asyncio.create_task(w()) for w in (claimer, recorder, storer, renewer)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in [*workers, *sending]:
                task.cancel()
        if failures:
            raise failures[0]

    async def flush(self) -> int:
        """Store the receipts and replies the channels handed over; returns how many.

        A receipt for a part this dispatcher submitted but has not recorded yet waits for the
        next flush (it would only be kept as unmatched and matched again a moment later).
        """
        held = self._unrecorded
        reports = [r for r in self.pool.reports if (r[0], r[1].message_id) not in held]
        self.pool.reports = [r for r in self.pool.reports if (r[0], r[1].message_id) in held]
        inbounds, self.pool.inbounds = self.pool.inbounds, []
        waiting = [r[2] for r in reports] + [i[2] for i in inbounds]
        try:
            if reports or inbounds:
                await self.db_call(self._apply, [r[:2] for r in reports], [i[:2] for i in inbounds])
        except BaseException as exc:
            # Not stored: the channels answer the carrier with an error, and it sends them again.
            for done in waiting:
                if not done.done():
                    done.set_exception(RuntimeError(f"not stored: {exc!r}"))
            raise
        for done in waiting:
            if not done.done():
                done.set_result(None)
        return len(reports) + len(inbounds)

    def _route(self, c: Claimed, batch: _Batch) -> tuple[list[str], str | None]:
        """The message's candidate channels and the one to use now (memoised per batch)."""
        failed_on = c.channel if c.reason in _TRANSIENT else None
        key = (c.tenant_id, int(c.lane), c.carrier, failed_on)
        found = batch.routes.get(key)
        if found is None:
            names = routing.candidates(
                list(self.pool.specs.values()), self.routes.get(c.tenant_id, []), c.lane, c.carrier
            )
            found = batch.routes[key] = (names, routing.choose(names, batch.ready, failed_on))
        return found

    async def _send(self, c: Claimed, batch: _Batch) -> Outcome:
        if self.runtime.clock.now() >= c.expires_at:
            return Outcome(c, "expired", [], c.channel, Reason.EXPIRED)
        scopes = batch.blocked.get((c.tenant_id, c.dest_index))
        if scopes and any(suppression.stops(s, c.lane) for s in scopes):
            return Outcome(c, "suppressed", [], None, Reason.SUPPRESSED)
        if c.lane is Lane.MARKETING:
            # The last word on quiet hours: a message planned inside them, or made due there by
            # a retry or a resumed campaign, waits for the recipient's next allowed minute.
            zone, rules = self.quiet.get(c.tenant_id, DEFAULT_QUIET)
            if c.time_zone:  # the recipient's own zone, when known
                zone = _zone(c.time_zone) or zone
            now = self.runtime.clock.now()
            if not rules.allowed(now.astimezone(zone)):
                due = next_allowed(now, zone, rules)
                return Outcome(c, "held", [], None, Reason.QUIET_HOURS, due_at=due)
        names, name = self._route(c, batch)
        if name is None:
            # Channels exist but none reaches this number (a configuration gap: fail now), or
            # none is up, or none is configured yet (wait for the operator).
            kind = "unroutable" if self.pool.specs and not names else "waiting"
            return Outcome(c, kind, [], None, Reason.NO_ROUTE)
        await self.pool.buckets[name].take()
        channel = self.pool.channels.get(name)
        if channel is None:  # stopped while we waited
            return Outcome(c, "transient", [], name, Reason.CARRIER_ERROR, "stopped")
        to = self.runtime.keyring.decrypt(c.dest_cipher, outbox.dest_context(c.tenant_id))
        message = Outgoing(c.id, to, c.body, c.lane, source=self.extensions.get(c.tenant_id, ""))
        try:
            ids = await channel.submit(message)
        except SubmitError as exc:
            if exc.transient and not exc.accepted:
                other = routing.choose(names, self.pool.ready() - {name}, None)
                return Outcome(
                    c, "transient", [], name, exc.reason, exc.code[:64], retry_now=other is not None
                )
            return Outcome(c, "failed", exc.accepted, name, exc.reason, exc.code[:64])
        return Outcome(c, "submitted", ids, name)

    # -- database side (run in a worker thread) -------------------------------------------------
    def _record(self, outcomes: list[Outcome]) -> None:
        recorded = self._tx(partial(self._record_states, outcomes), "recording outcomes")
        # Receipts that came before their parts were recorded, looked for only after the parts
        # are committed: a receipt stored meanwhile by another transaction (this dispatcher's
        # flush, another dispatcher's bind) is then seen here or sees the parts itself.
        if recorded:

            def look() -> dict[str, list[str]]:
                with self.runtime.engine.connect() as conn:  # a read first: seldom one waits
                    conn.execution_options(**{INDEX_PLANS: True})
                    return {ch: receipts.kept_ids(conn, ch, ids) for ch, ids in recorded.items()}

            kept = retrying(look, what="looking for kept receipts")
            if any(kept.values()):

                def match(conn: Connection) -> None:
                    for channel, ids in kept.items():
                        receipts.match_waiting(conn, self.runtime.clock, channel, ids)

                self._tx(match, "matching kept receipts")

    def _record_states(self, outcomes: list[Outcome], conn: Connection) -> dict[str, list[str]]:
        """The outcomes' state changes and parts, in the caller's transaction; returns the
        carrier ids recorded per channel."""
        now = self.runtime.clock.now()
        parts_by_tenant: dict[int, list[dict[str, Any]]] = {}
        submitted: dict[tuple[str | None, int], list[int]] = {}
        finals: list[int] = []
        recorded: dict[str, list[str]] = {}
        for o in outcomes:
            c = o.claimed
            why = o.reason.value if o.reason else None
            if o.kind in ("held", "waiting"):
                # No attempt was made (quiet hours; no channel up): give the attempt back and
                # look again when they are over, or shortly.
                outbox.move(
                    conn,
                    c.id,
                    State.SENDING,
                    State.PLANNED,
                    owner=self.owner,
                    due_at=o.due_at or now + timedelta(seconds=1),
                    attempts=max(0, c.attempts - 1),
                    reason=why,
                )
                continue
            if o.kind == "transient" and c.attempts < self.max_attempts:
                delay = 0.0 if o.retry_now else retry_delay(c.attempts)
                outbox.move(
                    conn,
                    c.id,
                    State.SENDING,
                    State.PLANNED,
                    owner=self.owner,
                    due_at=now + timedelta(seconds=delay),
                    reason=why,
                    carrier_code=o.code,
                    channel=o.channel,
                )
                continue
            for n, cid in enumerate(o.carrier_ids, start=1):
                parts_by_tenant.setdefault(c.tenant_id, []).append(
                    {
                        "message_id": c.id,
                        "part_no": n,
                        "channel": o.channel,
                        "carrier_id": cid,
                        "submitted_at": now,
                    }
                )
                recorded.setdefault(o.channel or "", []).append(cid)
            if o.kind == "submitted":
                submitted.setdefault((o.channel, len(o.carrier_ids)), []).append(c.id)
                continue
            target = State.EXPIRED if o.kind == "expired" else State.FAILED
            if outbox.move(
                conn,
                c.id,
                State.SENDING,
                target,
                owner=self.owner,
                reason=why,
                carrier_code=o.code,
                channel=o.channel,
                done_at=now,
            ):
                finals.append(c.id)
        # The common case in a few set-based statements: parts per tenant, then states.
        for tenant_id, rows in parts_by_tenant.items():
            _insert_parts(conn, tenant_id, rows, now)
        # One UPDATE per (channel, number of parts): a handful, not one per message.
        check_move(State.SENDING, State.SUBMITTED)
        for (channel, n), mids in submitted.items():
            stmt = (
                sa.update(messages)
                .where(
                    among(conn, messages.c.id, mids, sa.BigInteger),
                    messages.c.state == State.SENDING.value,
                    messages.c.lease_owner == self.owner,
                )
                .values(
                    state=State.SUBMITTED.value,
                    lease_owner=None,
                    lease_until=None,
                    channel=channel,
                    carrier_parts=n,
                    reason=None,
                    carrier_code=None,
                    submitted_at=now,
                )
            )
            conn.execute(unscoped(stmt, WHY))
        receipts.after_final(conn, self.runtime.clock, finals)
        return recorded

    def _apply(
        self, reports: list[tuple[str, Report]], inbounds: list[tuple[str, Inbound]]
    ) -> None:
        clock = self.runtime.clock
        by_channel: dict[str, list[Report]] = {}
        for name, report in reports:
            by_channel.setdefault(name, []).append(report)
        unmatched: dict[str, list[str]] = {}
        pending: set[int] = set()

        def store(conn: Connection) -> None:
            unmatched.clear()
            pending.clear()
            for name, items in by_channel.items():
                receipts.apply_reports(
                    conn,
                    clock,
                    name,
                    items,
                    unmatched=unmatched.setdefault(name, []),
                    pending=pending,
                )
            for name, inbound in inbounds:
                spec = self.pool.specs.get(name) or ChannelSpec(name=name, kind="unknown")
                replies.apply_inbound(conn, clock, self.runtime.keyring, spec, [inbound])

        self._tx(store, "storing receipts and replies")
        # Looked at again once committed (see _record): receipts kept because their parts were
        # not there, and long messages whose other parts' receipts another transaction stored.
        if pending or any(unmatched.values()):

            def again(conn: Connection) -> None:
                for name, ids in unmatched.items():
                    if ids:
                        receipts.match_waiting(conn, clock, name, ids)
                receipts.settle(conn, clock, pending)

            self._tx(again, "matching receipts again")


# PostgreSQL: a tenant's parts in one short statement of arrays (prepared once, whatever the
# number of rows) rather than a multi-row VALUES list the driver must parse every time.
_PARTS_PG = sa.text(
    "INSERT INTO message_parts"
    " (tenant_id, message_id, part_no, channel, carrier_id, submitted_at)"
    " SELECT :tenant, u.mid, u.no, u.ch, u.cid, :now FROM unnest(CAST(:mids AS bigint[]),"
    " CAST(:nos AS smallint[]), CAST(:chs AS text[]), CAST(:cids AS text[])) AS u(mid, no, ch, cid)"
).bindparams(sa.bindparam("now", type_=UTCDateTime))


def _insert_parts(
    conn: Connection, tenant_id: int, rows: list[dict[str, Any]], now: datetime
) -> None:
    if conn.dialect.name != "postgresql":
        TenantScope(tenant_id).insert_many(conn, message_parts, rows)
        return
    params = {
        "tenant": TenantScope(tenant_id).tenant_id,
        "mids": pg_array((r["message_id"] for r in rows), int),
        "nos": pg_array((r["part_no"] for r in rows), int),
        "chs": pg_array(r["channel"] for r in rows),
        "cids": pg_array(r["carrier_id"] for r in rows),
        "now": now,
    }
    conn.execute(
        unscoped(_PARTS_PG, "one tenant's parts, its id taken from the claimed rows"), params
    )


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` seconds have passed."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)

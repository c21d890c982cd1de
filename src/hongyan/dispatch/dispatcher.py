"""The dispatcher: the only code that hands messages to carriers.

One pass (:meth:`Dispatcher.run_once`) claims a batch under a lease, submits each message on the
channel concurrently (the channel's window bounds what is in flight), and records the outcome:
``submitted`` with one ``message_parts`` row per carrier id, back to ``planned`` with a backoff
for a transient refusal (throttled, queue full), ``failed`` for a permanent one, ``expired`` when
the validity ran out before sending. Receipts arrive on the channel's callback and are applied in
the next pass: matched to a part by (channel, carrier id); a receipt whose part is not recorded
yet is kept in ``unmatched_receipts`` and applied when the part is recorded. A message becomes
final when every part has a receipt.

Which messages can be sent twice: a message whose submit reached the carrier but whose
``submitted`` record was never written (the process died between the two, or its lease ran out
while the submit was in flight) is claimed again after the lease and submitted again. That set
is bounded by the batch in flight at the crash; SMPP offers no idempotent submit to close it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.channels.smpp.client import Report, SmppClient, SmppError
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import message_parts, messages, unmatched_receipts
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import Claimed
from hongyan.dispatch.states import Reason, State, check_move, retry_delay
from hongyan.runtime import Runtime

log = logging.getLogger("hongyan.dispatch")
WHY = "the dispatcher serves every tenant"
# Receipt error codes that mean the number does not exist (空号); carrier-specific, configurable.
DEFAULT_INVALID_ERRS = frozenset({"001"})


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    kind: str  # submitted, transient, failed, expired
    carrier_ids: list[str]
    status: int | None = None


def final_state(
    stats: list[str], errs: list[str], invalid_errs: frozenset[str]
) -> tuple[State, Reason | None]:
    """A message's verdict from the receipts of all its parts."""
    if all(s == "DELIVRD" for s in stats):
        return State.DELIVERED, None
    if any(s == "EXPIRED" for s in stats):
        return State.EXPIRED, Reason.EXPIRED
    if any(s == "REJECTD" for s in stats):
        return State.UNDELIVERED, Reason.REJECTED
    if any(e in invalid_errs for s, e in zip(stats, errs, strict=True) if s == "UNDELIV"):
        return State.UNDELIVERED, Reason.INVALID_NUMBER
    return State.UNDELIVERED, Reason.CARRIER_ERROR


class Dispatcher:
    def __init__(
        self,
        runtime: Runtime,
        channel: str,
        client: SmppClient,
        *,
        owner: str,
        batch: int = 200,
        lease: timedelta = timedelta(seconds=60),
        invalid_errs: frozenset[str] = DEFAULT_INVALID_ERRS,
    ) -> None:
        self.runtime = runtime
        self.channel = channel
        self.client = client
        self.owner = owner
        self.batch = batch
        self.lease = lease
        self.invalid_errs = invalid_errs
        self._reports: list[Report] = []

    async def on_report(self, report: Report) -> None:
        """The channel's receipt callback: queue for the next pass (no I/O on the read loop)."""
        self._reports.append(report)

    async def run_once(self) -> int:
        engine = self.runtime.engine
        clock = self.runtime.clock

        def claim() -> list[Claimed]:
            with engine.begin() as conn:
                return outbox.claim(
                    conn, clock, owner=self.owner, limit=self.batch, lease=self.lease
                )

        claimed = await asyncio.to_thread(claim)
        outcomes = await asyncio.gather(*(self._send(c) for c in claimed))
        if outcomes:
            await asyncio.to_thread(self._record, outcomes)
        await self.flush_reports()
        return len(claimed)

    async def flush_reports(self) -> int:
        reports, self._reports = self._reports, []
        if reports:
            await asyncio.to_thread(self._apply_reports, reports)
        return len(reports)

    async def _send(self, c: Claimed) -> Outcome:
        if self.runtime.clock.now() >= c.expires_at:
            return Outcome(c, "expired", [])
        to = self.runtime.keyring.decrypt(c.dest_cipher, outbox.dest_context(c.tenant_id))
        try:
            ids = await self.client.submit(to, c.body)
        except SmppError as exc:
            kind = "transient" if exc.transient and not exc.accepted else "failed"
            return Outcome(c, kind, exc.accepted, exc.status)
        return Outcome(c, "submitted", ids)

    # -- database side (run in a worker thread) -------------------------------------------------
    def _record(self, outcomes: list[Outcome]) -> None:
        now = self.runtime.clock.now()
        parts_by_tenant: dict[int, list[dict[str, Any]]] = {}
        submitted: list[dict[str, Any]] = []
        with self.runtime.engine.begin() as conn:
            for o in outcomes:
                c = o.claimed
                code = f"0x{o.status:08x}" if o.status is not None else None
                if o.kind == "transient":
                    outbox.move(
                        conn,
                        c.id,
                        State.SENDING,
                        State.PLANNED,
                        owner=self.owner,
                        due_at=now + timedelta(seconds=retry_delay(c.attempts)),
                        reason=Reason.THROTTLED.value,
                        carrier_code=code,
                    )
                    continue
                if o.kind == "expired":
                    outbox.move(
                        conn,
                        c.id,
                        State.SENDING,
                        State.EXPIRED,
                        owner=self.owner,
                        reason=Reason.EXPIRED.value,
                        done_at=now,
                    )
                    continue
                for n, cid in enumerate(o.carrier_ids, start=1):
                    parts_by_tenant.setdefault(c.tenant_id, []).append(
                        {
                            "message_id": c.id,
                            "part_no": n,
                            "channel": self.channel,
                            "carrier_id": cid,
                            "submitted_at": now,
                        }
                    )
                if o.kind == "failed":
                    outbox.move(
                        conn,
                        c.id,
                        State.SENDING,
                        State.FAILED,
                        owner=self.owner,
                        reason=Reason.CARRIER_ERROR.value,
                        carrier_code=code,
                        channel=self.channel,
                        done_at=now,
                    )
                else:
                    submitted.append({"mid": c.id})
            # The common case in two set-based statements: parts per tenant, one executemany.
            for tenant_id, rows in parts_by_tenant.items():
                TenantScope(tenant_id).insert_many(conn, message_parts, rows)
            if submitted:
                check_move(State.SENDING, State.SUBMITTED)
                stmt = (
                    sa.update(messages)
                    .where(
                        messages.c.id == sa.bindparam("mid"),
                        messages.c.state == State.SENDING.value,
                        messages.c.lease_owner == self.owner,
                    )
                    .values(
                        state=State.SUBMITTED.value,
                        lease_owner=None,
                        lease_until=None,
                        channel=self.channel,
                        submitted_at=now,
                    )
                )
                conn.execute(unscoped(stmt, WHY), submitted)
            recorded = [cid for o in outcomes for cid in o.carrier_ids]
            if recorded:
                self._match_waiting(conn, recorded)

    def _match_waiting(self, conn: Connection, carrier_ids: list[str]) -> None:
        stmt = sa.select(unmatched_receipts).where(
            unmatched_receipts.c.channel == self.channel,
            unmatched_receipts.c.carrier_id.in_(carrier_ids),
        )
        waiting = conn.execute(unscoped(stmt, WHY)).mappings().all()
        if not waiting:
            return
        touched = {self._apply_one(conn, w["carrier_id"], w["stat"], w["err"]) for w in waiting}
        conn.execute(
            unscoped(
                sa.delete(unmatched_receipts).where(
                    unmatched_receipts.c.id.in_([w["id"] for w in waiting])
                ),
                WHY,
            )
        )
        self._settle(conn, {m for m in touched if m is not None})

    def _apply_reports(self, reports: list[Report]) -> None:
        """Apply a batch of receipts with one lookup and one executemany per chunk."""
        now = self.runtime.clock.now()
        part = message_parts.c
        with self.runtime.engine.begin() as conn:
            touched: set[int] = set()
            for i in range(0, len(reports), 500):
                chunk = reports[i : i + 500]
                found = conn.execute(
                    unscoped(
                        sa.select(part.id, part.message_id, part.carrier_id, part.stat)
                        .where(
                            part.channel == self.channel,
                            part.carrier_id.in_({r.message_id for r in chunk}),
                        )
                        .order_by(part.id.desc()),
                        WHY,
                    )
                ).all()
                candidates: dict[str, list[Any]] = {}
                for row in found:
                    candidates.setdefault(row.carrier_id, []).append(row)
                updates: list[dict[str, Any]] = []
                used: set[int] = set()
                for r in chunk:
                    rows = candidates.get(r.message_id, [])
                    # The newest part with this id that has no receipt yet; else the newest.
                    pick = next(
                        (x for x in rows if x.stat is None and x.id not in used),
                        rows[0] if rows else None,
                    )
                    if pick is None:
                        conn.execute(
                            unscoped(sa.insert(unmatched_receipts), WHY),
                            {
                                "channel": self.channel,
                                "carrier_id": r.message_id,
                                "stat": r.stat,
                                "err": r.err,
                                "raw": r.raw,
                                "received_at": now,
                            },
                        )
                        continue
                    used.add(pick.id)
                    touched.add(int(pick.message_id))
                    updates.append({"pid": pick.id, "stat": r.stat, "err": r.err})
                if updates:
                    stmt = (
                        sa.update(message_parts)
                        .where(part.id == sa.bindparam("pid"))
                        .values(stat=sa.bindparam("stat"), err=sa.bindparam("err"), done_at=now)
                    )
                    conn.execute(unscoped(stmt, WHY), updates)
            self._settle(conn, touched)

    def _apply_one(self, conn: Connection, carrier_id: str, stat: str, err: str) -> int | None:
        """Store a receipt on its part; returns the message id, or None if no part matches."""
        part = message_parts.c
        row = conn.execute(
            unscoped(
                # The newest part with this id that has no receipt yet: carriers wrap and
                # reuse ids; a repeated receipt lands on the newest part again, harmlessly.
                sa.select(part.id, part.message_id)
                .where(part.channel == self.channel, part.carrier_id == carrier_id)
                .order_by(part.stat.is_not(None), part.id.desc())
                .limit(1),
                WHY,
            )
        ).first()
        if row is None:
            return None
        conn.execute(
            unscoped(
                sa.update(message_parts)
                .where(part.id == row.id)
                .values(stat=stat, err=err, done_at=self.runtime.clock.now()),
                WHY,
            )
        )
        return int(row.message_id)

    def _settle(self, conn: Connection, message_ids: set[int]) -> None:
        """Give each message whose parts all have receipts its final state."""
        if not message_ids:
            return
        part = message_parts.c
        rows = conn.execute(
            unscoped(
                sa.select(part.message_id, part.stat, part.err, messages.c.state, messages.c.parts)
                .join(messages, messages.c.id == part.message_id)
                .where(part.message_id.in_(message_ids))
                .order_by(part.message_id, part.part_no),
                WHY,
            )
        ).all()
        by_message: dict[int, list[Any]] = {}
        for r in rows:
            by_message.setdefault(r.message_id, []).append(r)
        now = self.runtime.clock.now()
        settled: list[dict[str, Any]] = []
        for mid, parts in by_message.items():
            state, total = State(parts[0].state), parts[0].parts
            if len(parts) < total or any(p.stat is None for p in parts):
                continue
            if state not in (State.SUBMITTED, State.EXPIRED):
                continue
            verdict, reason = final_state(
                [p.stat for p in parts], [p.err or "" for p in parts], self.invalid_errs
            )
            check_move(state, verdict)
            settled.append(
                {
                    "mid": mid,
                    "from_state": state.value,
                    "to_state": verdict.value,
                    "why": reason.value if reason else None,
                    "code": next((p.err for p in parts if p.stat != "DELIVRD"), None),
                }
            )
        if settled:
            stmt = (
                sa.update(messages)
                .where(
                    messages.c.id == sa.bindparam("mid"),
                    messages.c.state == sa.bindparam("from_state"),
                )
                .values(
                    state=sa.bindparam("to_state"),
                    reason=sa.bindparam("why"),
                    carrier_code=sa.bindparam("code"),
                    done_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            conn.execute(unscoped(stmt, WHY), settled)

"""Delivery receipts: matched to message parts, and messages settled when all are in.

Every receipt, whether it came over an SMPP bind or a provider's HTTP push, ends in
:func:`apply_reports`. A receipt is matched by (channel, carrier id) to the newest part with that
id that has no receipt yet (carriers wrap and reuse ids); one that matches nothing is kept in
``unmatched_receipts`` (it may have beaten its submit response to the database) and applied by
:func:`match_waiting` when the part is recorded. A message is final when every carrier id it was
given has a receipt (:func:`settle`): its verdict is written, a ``message.status`` webhook event
is queued in the same transaction, and an invalid-number verdict (空号) puts the number on the
tenant's suppression list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.channels.base import Report
from hongyan.clock import Clock
from hongyan.contacts import suppression
from hongyan.db.scope import unscoped
from hongyan.db.sql import among, pg_array
from hongyan.db.tables import message_parts, messages, unmatched_receipts, webhook_endpoints
from hongyan.db.types import UTCDateTime
from hongyan.dispatch.states import Reason, State, check_move
from hongyan.webhooks.events import Event, emit

WHY = "receipts arrive per channel, for every tenant"
CHUNK = 500


# When parts disagree, the reason that says most about the number wins.
_REASON_RANK = [
    Reason.INVALID_NUMBER,
    Reason.BLOCKED,
    Reason.REJECTED,
    Reason.POWERED_OFF,
    Reason.EXPIRED,
    Reason.CARRIER_ERROR,
    Reason.UNKNOWN,
]


def final_state(parts: Sequence[tuple[str, str | None]]) -> tuple[State, Reason | None]:
    """A message's verdict from its parts' (stat, reason) receipts (pure)."""
    if all(stat == "DELIVRD" for stat, _ in parts):
        return State.DELIVERED, None
    reasons = {Reason(r) if r else Reason.CARRIER_ERROR for s, r in parts if s != "DELIVRD"}
    reason = next((r for r in _REASON_RANK if r in reasons), Reason.CARRIER_ERROR)
    if reason is Reason.EXPIRED:
        return State.EXPIRED, Reason.EXPIRED
    return State.UNDELIVERED, reason


def apply_reports(
    conn: Connection,
    clock: Clock,
    channel: str,
    reports: Sequence[Report],
    *,
    unmatched: list[str] | None = None,
    pending: set[int] | None = None,
) -> int:
    """Store receipts on their parts and settle what became final; returns how many matched.

    ``unmatched`` collects the carrier ids kept for later matching, ``pending`` the long
    messages still waiting for a part's receipt (see :func:`settle`).
    """
    now = clock.now()
    part = message_parts.c
    touched: set[int] = set()
    matched = 0
    for i in range(0, len(reports), CHUNK):
        chunk = reports[i : i + CHUNK]
        # Newest first, sorted here: an ORDER BY id would tempt the planner into walking the
        # primary key backwards over every part instead of looking the ids up.
        found = conn.execute(
            unscoped(
                sa.select(part.id, part.message_id, part.carrier_id, part.stat).where(
                    among(conn, part.carrier_id, {r.message_id for r in chunk}, sa.String),
                    part.channel == channel,
                ),
                WHY,
            )
        ).all()
        candidates: dict[str, list[Any]] = {}
        for row in sorted(found, key=lambda row: row.id, reverse=True):
            candidates.setdefault(row.carrier_id, []).append(row)
        updates: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        used: set[int] = set()
        for r in chunk:
            rows = candidates.get(r.message_id, [])
            # The newest part with this id that has no receipt yet; else the newest (a repeated
            # receipt lands on it again, harmlessly).
            pick = next(
                (x for x in rows if x.stat is None and x.id not in used),
                rows[0] if rows else None,
            )
            if pick is None:
                if unmatched is not None:
                    unmatched.append(r.message_id)
                waiting.append(
                    {
                        "channel": channel,
                        "carrier_id": r.message_id,
                        "stat": r.stat[:16],
                        "err": r.err[:64],
                        "raw": _raw(r),
                        "received_at": now,
                    }
                )
                continue
            used.add(pick.id)
            touched.add(int(pick.message_id))
            updates.append(
                {
                    "pid": pick.id,
                    "stat": r.stat[:16],
                    "err": r.err[:64],
                    "why": r.reason.value if r.reason else None,
                }
            )
        if waiting:
            conn.execute(unscoped(sa.insert(unmatched_receipts), WHY), waiting)
        if updates:
            matched += len(updates)
            _store_on_parts(conn, updates, now)
    settle(conn, clock, touched, pending=pending)
    return matched


# PostgreSQL: one statement for a whole chunk of receipts instead of one per part.
_PARTS_PG = sa.text(
    "UPDATE message_parts AS p SET stat = u.stat, err = u.err, reason = u.why, done_at = :now"
    " FROM unnest(CAST(:pids AS bigint[]), CAST(:stats AS text[]), CAST(:errs AS text[]),"
    " CAST(:whys AS text[])) AS u(pid, stat, err, why) WHERE p.id = u.pid"
).bindparams(sa.bindparam("now", type_=UTCDateTime))


def _store_on_parts(conn: Connection, updates: list[dict[str, Any]], now: datetime) -> None:
    if conn.dialect.name == "postgresql":
        params = {
            "pids": pg_array((u["pid"] for u in updates), int),
            "stats": pg_array(u["stat"] for u in updates),
            "errs": pg_array(u["err"] for u in updates),
            "whys": pg_array(u["why"] for u in updates),
            "now": now,
        }
        conn.execute(unscoped(_PARTS_PG, WHY), params)
        return
    part = message_parts.c
    stmt = (
        sa.update(message_parts)
        .where(part.id == sa.bindparam("pid"))
        .values(
            stat=sa.bindparam("stat"),
            err=sa.bindparam("err"),
            reason=sa.bindparam("why"),
            done_at=now,
        )
    )
    conn.execute(unscoped(stmt, WHY), updates)


def _raw(report: Report) -> str:
    """The receipt as kept for later matching: the raw text plus our reading of it."""
    reason = report.reason.value if report.reason else ""
    return f"{report.raw}\x1f{reason}"


def kept_ids(conn: Connection, channel: str, carrier_ids: Iterable[str]) -> list[str]:
    """Which of these carrier ids have a receipt kept in ``unmatched_receipts`` (a read)."""
    ids = list(set(carrier_ids))
    u = unmatched_receipts.c
    found: list[str] = []
    for i in range(0, len(ids), CHUNK):
        found.extend(
            conn.execute(
                unscoped(
                    sa.select(u.carrier_id)
                    .distinct()
                    .where(
                        u.channel == channel,
                        among(conn, u.carrier_id, ids[i : i + CHUNK], sa.String),
                    ),
                    WHY,
                )
            ).scalars()
        )
    return found


def match_waiting(conn: Connection, clock: Clock, channel: str, carrier_ids: Iterable[str]) -> int:
    """Apply kept receipts whose parts were just recorded; returns how many."""
    ids = list(set(carrier_ids))
    total = 0
    u, part = unmatched_receipts.c, message_parts.c
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        # Only those whose part is there now; taken with DELETE … RETURNING, so that two
        # transactions looking at once (a recorder and a flush) never apply one twice.
        has_part = (
            sa.select(part.id)
            .where(part.channel == u.channel, part.carrier_id == u.carrier_id)
            .exists()
        )
        taken = conn.execute(
            unscoped(
                sa.delete(unmatched_receipts)
                .where(u.channel == channel, among(conn, u.carrier_id, chunk, sa.String), has_part)
                .returning(u.id, u.carrier_id, u.stat, u.err, u.raw),
                WHY,
            )
        ).all()
        if not taken:
            continue
        reports = []
        for w in sorted(taken, key=lambda w: w.id):
            raw, _, reason = w.raw.partition("\x1f")
            reports.append(
                Report(w.carrier_id, w.stat, w.err, None, raw, Reason(reason) if reason else None)
            )
        total += apply_reports(conn, clock, channel, reports)
    return total


def settle(
    conn: Connection, clock: Clock, message_ids: Iterable[int], *, pending: set[int] | None = None
) -> int:
    """Give each message whose expected receipts are all in its final state; returns how many.

    ``pending`` collects the long messages still missing a part's receipt: another transaction
    may be storing it at this moment, unseen here, so the caller settles them again once its own
    transaction is committed (then one of the two sees both).
    """
    ids = sorted(set(message_ids))
    if not ids:
        return 0
    part = message_parts.c
    m = messages.c
    settled: list[dict[str, Any]] = []
    rows_by_id: dict[int, Any] = {}
    known: dict[int, tuple[int, Reason | None]] = {}
    for i in range(0, len(ids), CHUNK):
        rows = conn.execute(
            unscoped(
                sa.select(
                    part.message_id,
                    part.stat,
                    part.reason,
                    part.err,
                    m.state,
                    m.parts,
                    m.carrier_parts,
                    m.tenant_id,
                )
                .join(messages, m.id == part.message_id)
                .where(among(conn, part.message_id, ids[i : i + CHUNK], sa.BigInteger))
                .order_by(part.message_id, part.id),
                WHY,
            )
        ).all()
        by_message: dict[int, list[Any]] = {}
        for r in rows:
            by_message.setdefault(r.message_id, []).append(r)
        for mid, parts in by_message.items():
            first = parts[0]
            state = State(first.state)
            expected = first.carrier_parts or first.parts
            # The parts of the latest submission only (rows in the order they were recorded): a
            # message submitted twice (a lost lease, a crash) has older rows too.
            latest = parts[-expected:] if len(parts) >= expected else parts
            if len(latest) < expected or any(p.stat is None for p in latest):
                if pending is not None and expected > 1:
                    pending.add(mid)
                continue
            if state not in (State.SUBMITTED, State.EXPIRED):
                continue
            verdict, reason = final_state([(p.stat, p.reason) for p in latest])
            if state is verdict:
                continue
            check_move(state, verdict)
            known[mid] = (int(first.tenant_id), reason)
            settled.append(
                {
                    "mid": mid,
                    "from_state": state.value,
                    "to_state": verdict.value,
                    "why": reason.value if reason else None,
                    "code": next((p.err for p in latest if p.stat != "DELIVRD"), None),
                }
            )
            rows_by_id[mid] = first
    if not settled:
        return 0
    now = clock.now()
    # One compare-and-set UPDATE per kind of verdict (a handful), each saying which rows it
    # changed: a message two transactions settle at once gets one final state and one event.
    kinds: dict[tuple[str, str, str | None, str | None], list[int]] = {}
    for s in settled:
        kinds.setdefault((s["from_state"], s["to_state"], s["why"], s["code"]), []).append(s["mid"])
    done: list[int] = []
    for (from_state, to_state, why, code), mids in kinds.items():
        for i in range(0, len(mids), CHUNK):
            stmt = (
                sa.update(messages)
                .where(among(conn, m.id, mids[i : i + CHUNK], sa.BigInteger), m.state == from_state)
                .values(
                    state=to_state,
                    reason=why,
                    carrier_code=code,
                    done_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
                .returning(m.id)
            )
            done.extend(int(r.id) for r in conn.execute(unscoped(stmt, WHY)))
    after_final(conn, clock, done, known=known)
    return len(done)


def after_final(
    conn: Connection,
    clock: Clock,
    message_ids: Sequence[int],
    *,
    known: Mapping[int, tuple[int, Reason | None]] | None = None,
) -> None:
    """What follows a final state: the webhook event, and 空号 onto the suppression list.

    ``known`` (message id → tenant id, reason), when the caller has it, spares reading the
    messages when none of them is 空号 and none of their tenants has a webhook endpoint.
    """
    if not message_ids:
        return
    if known is not None and all(known[i][1] is not Reason.INVALID_NUMBER for i in message_ids):
        tenants = {known[i][0] for i in message_ids}
        listening = conn.execute(
            unscoped(
                sa.select(webhook_endpoints.c.id)
                .where(
                    webhook_endpoints.c.tenant_id.in_(tenants),
                    webhook_endpoints.c.active.is_(True),
                )
                .limit(1),
                "whether any tenant of a receipt batch has a webhook endpoint",
            )
        ).first()
        if listening is None:
            return
    m = messages.c
    rows = conn.execute(
        unscoped(
            sa.select(
                m.id,
                m.tenant_id,
                m.state,
                m.reason,
                m.carrier_code,
                m.dest_masked,
                m.dest_index,
                m.dest_cipher,
                m.category,
                m.source,
                m.source_ref,
                m.parts,
                m.channel,
                m.submitted_at,
                m.done_at,
            ).where(among(conn, m.id, message_ids, sa.BigInteger)),
            WHY,
        )
    ).all()
    events = [
        Event(
            r.tenant_id,
            "message.status",
            {
                "message": {
                    "id": r.id,
                    "state": r.state,
                    "reason": r.reason,
                    "carrier_code": r.carrier_code,
                    "to": r.dest_masked,
                    "category": r.category,
                    "source": r.source,
                    "source_ref": r.source_ref,
                    "parts": r.parts,
                    "channel": r.channel,
                    "submitted_at": r.submitted_at.isoformat() if r.submitted_at else None,
                    "done_at": r.done_at.isoformat() if r.done_at else None,
                }
            },
        )
        for r in rows
    ]
    emit(conn, clock, events)
    now = clock.now()
    invalid: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.reason == Reason.INVALID_NUMBER.value:
            invalid.setdefault(r.tenant_id, []).append(
                {
                    "phone_index": bytes(r.dest_index),
                    "phone_cipher": bytes(r.dest_cipher),
                    "phone_masked": r.dest_masked,
                    "reason": "invalid",
                    "scope": suppression.SCOPE_OF["invalid"],
                    "source": "receipt",
                    "detail": f"message {r.id}: {r.carrier_code or ''}".strip(),
                    "created_at": now,
                    "expires_at": now + suppression.INVALID_FOR,
                }
            )
    for tenant_id, items in invalid.items():
        suppression.store(conn, tenant_id, items, now)


def expire_unreceipted(conn: Connection, clock: Clock, *, grace: timedelta) -> int:
    """Submitted messages whose validity ran out ``grace`` ago with receipts missing: expired.

    A receipt that comes later still corrects the verdict (``expired → delivered``).
    """
    now = clock.now()
    m = messages.c
    ids = [
        r.id
        for r in conn.execute(
            unscoped(
                sa.select(m.id)
                .where(m.state == State.SUBMITTED.value, m.expires_at < now - grace)
                .limit(5000),
                "the receipt sweep covers every tenant",
            )
        )
    ]
    if not ids:
        return 0
    check_move(State.SUBMITTED, State.EXPIRED)
    conn.execute(
        unscoped(
            sa.update(messages)
            .where(among(conn, m.id, ids, sa.BigInteger), m.state == State.SUBMITTED.value)
            .values(state=State.EXPIRED.value, reason=Reason.EXPIRED.value, done_at=now),
            "the receipt sweep covers every tenant",
        )
    )
    after_final(conn, clock, ids)
    return len(ids)

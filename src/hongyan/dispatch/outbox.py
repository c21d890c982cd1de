"""The outbox: putting messages in, and dispatchers taking them out under a lease.

Every path that sends (API, campaign, A/B phase, journey) ends in :func:`enqueue`; only a
dispatcher calls :func:`claim`. On PostgreSQL a claim is ``UPDATE … WHERE id IN (SELECT … FOR
UPDATE SKIP LOCKED) RETURNING``, so any number of dispatchers on any number of machines take
disjoint batches; on SQLite the database's single writer gives the same guarantee to the one
dispatcher. A lease that runs out (the dispatcher died) makes the message claimable again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.clock import Clock
from hongyan.contacts import suppression
from hongyan.contacts.geo import describe
from hongyan.contacts.numbers import zone_of
from hongyan.content import gate
from hongyan.content.encoding import plan
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.sql import among
from hongyan.db.tables import contacts, messages
from hongyan.dispatch.states import Lane, State, check_move
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security.keyring import KeyRing, mask_phone

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
DEFAULT_VALIDITY = {
    Lane.VERIFICATION: timedelta(minutes=10),
    Lane.NOTIFICATION: timedelta(hours=24),
    Lane.MARKETING: timedelta(hours=24),
}


# A number is encrypted and indexed under one context per tenant wherever it is stored (contacts,
# suppression, messages), so a contact's ciphertext and blind index are a message's as they are.
dest_context = suppression.phone_context


@dataclass(frozen=True)
class NewMessage:
    to: str  # E.164
    text: str
    lane: Lane = Lane.NOTIFICATION
    source: str = "api"
    source_ref: str | None = None
    idempotency_key: str | None = None
    due_at: datetime | None = None
    validity: timedelta | None = None
    # The approved template version the text was rendered from; marketing needs one
    # (hongyan.content.gate).
    template_version_id: int | None = None
    # What planned it (a campaign's set-based materialisation writes these itself; a journey
    # step or a test enqueues one message with them).
    campaign_id: int | None = None
    variant: str | None = None
    contact_id: int | None = None


@dataclass(frozen=True)
class Claimed:
    id: int
    tenant_id: int
    lane: Lane
    dest_cipher: bytes
    body: str
    attempts: int
    expires_at: datetime
    dest_index: bytes = b""
    carrier: str | None = None
    channel: str | None = None  # the channel of the previous attempt, if any
    reason: str | None = None  # why the previous attempt did not go
    time_zone: str | None = None  # the recipient's own zone for quiet hours (None: the tenant's)


class InvalidNumber(ValidationFailed):
    code = "invalid_number"
    message_zh = "手机号码格式不正确（需要 E.164 格式，如 +8613812345678）"
    message_en = "Not a valid phone number (E.164 expected, e.g. +8613812345678)"


class TooLong(ValidationFailed):
    code = "text_too_long"


class Suppressed(ValidationFailed):
    code = "number_suppressed"
    message_zh = "该号码在屏蔽名单中（已退订或为空号），不能发送此类短信"
    message_en = "This number is on the suppression list (opted out or invalid) for this category"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    message_zh = "该幂等键已用于另一条不同的短信"
    message_en = "This idempotency key was already used for a different message"


def enqueue(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    new: NewMessage,
    *,
    max_parts: int,
) -> tuple[int, bool]:
    """Plan one message; returns (id, created). A repeated idempotency key returns the first id."""
    if not E164.fullmatch(new.to):  # match() would let a trailing newline through
        raise InvalidNumber()
    text_plan = plan(new.text)
    if text_plan.parts == 0:
        raise ValidationFailed("The text is empty", "短信内容不能为空")
    if text_plan.parts > max_parts:
        raise TooLong(
            f"The text needs {text_plan.parts} parts; the limit is {max_parts}",
            f"短信需拆分为 {text_plan.parts} 条，超过上限 {max_parts} 条",
        )
    gate.check_outbox(conn, tenant_id, new.lane, new.template_version_id)
    scope = TenantScope(tenant_id)
    context = dest_context(tenant_id)
    index = keyring.blind_index(new.to, context)
    if new.idempotency_key:
        found = _by_key(conn, scope, new.idempotency_key)
        if found is not None:
            return _same_or_conflict(found, index, new.text), False
    now = clock.now()
    why = suppression.is_suppressed(conn, keyring, tenant_id, new.to, new.lane, now)
    if why is not None:
        raise Suppressed(details={"reason": why})
    due = new.due_at or now
    # The recipient's carrier and place, from the number: the lookup that gave a contact its
    # own (the campaign report groups by them; campaigns copy the contact's).
    number = describe(new.to)
    contact_id, zone = new.contact_id, None
    if new.lane is Lane.MARKETING:
        contact_id, zone = _recipient(conn, scope, index, new.to, contact_id)
    row: dict[str, Any] = {
        "lane": int(new.lane),
        "category": new.lane.name.lower(),
        "source": new.source,
        "source_ref": new.source_ref,
        "idempotency_key": new.idempotency_key,
        "dest_cipher": keyring.encrypt(new.to, context),
        "dest_index": index,
        "dest_masked": mask_phone(new.to),
        "carrier": number.carrier,
        "number_province": number.province,
        "number_city": number.city,
        "body": new.text,
        "template_version_id": new.template_version_id,
        "campaign_id": new.campaign_id,
        "variant": new.variant,
        "contact_id": contact_id,
        "time_zone": zone,
        "encoding": text_plan.encoding,
        "parts": text_plan.parts,
        "state": State.PLANNED.value,
        "due_at": due,
        "expires_at": due + (new.validity or DEFAULT_VALIDITY[new.lane]),
        "created_at": now,
    }
    try:
        with conn.begin_nested():
            result = conn.execute(scope.insert(messages), row)
    except IntegrityError:
        # Another request with the same idempotency key won the race.
        found = _by_key(conn, scope, new.idempotency_key or "")
        if found is None:
            raise
        return _same_or_conflict(found, index, new.text), False
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0]), True


def _recipient(
    conn: Connection, scope: TenantScope, index: bytes, to: str, contact_id: int | None
) -> tuple[int | None, str | None]:
    """A marketing message's contact (the number's, when it is one: so it counts toward the
    contact's frequency caps like a campaign's) and the zone its quiet hours are kept in (the
    contact's own, else a foreign number's single zone; None: the tenant's)."""
    c = contacts.c
    where = c.id == contact_id if contact_id is not None else c.phone_index == index
    found = conn.execute(scope.select(contacts, c.id, c.time_zone).where(where)).first()
    if found is not None:
        return int(found.id), found.time_zone or zone_of(to)
    return contact_id, zone_of(to)


def _by_key(conn: Connection, scope: TenantScope, key: str) -> Any:
    stmt = scope.select(messages, messages.c.id, messages.c.dest_index, messages.c.body).where(
        messages.c.idempotency_key == key
    )
    return conn.execute(stmt).first()


def _same_or_conflict(found: Any, index: bytes, text: str) -> int:
    if bytes(found.dest_index) != index or found.body != text:
        raise IdempotencyConflict()
    return int(found.id)


def claim(
    conn: Connection,
    clock: Clock,
    *,
    owner: str,
    limit: int,
    lease: timedelta,
    stale: bool = True,
) -> list[Claimed]:
    """Take up to ``limit`` messages: first those whose lease ran out (a dead dispatcher's, late
    already; unless ``stale`` is False), then due ones, most urgent lane first.

    Two statements, each an ordered index scan that stops at ``limit`` rows (``ix_messages_lease``,
    ``ix_messages_claim``): one query with ``OR`` would sort every due row to find the first few,
    80 ms a claim with 200,000 messages waiting. On PostgreSQL the lease index also holds an
    entry for every earlier version of a row that was ``sending`` until vacuum removes it, so the
    look for run-out leases walks over all of them: a busy dispatcher does it once a second, not
    with every claim (``stale``).
    """
    m = messages.c
    now = clock.now()
    rows: list[Any] = []
    if stale:
        ran_out = sa.and_(m.state == State.SENDING.value, m.lease_until < now)
        rows = _take(conn, ran_out, (m.lease_until,), owner=owner, limit=limit, until=now + lease)
    due = sa.and_(m.state == State.PLANNED.value, m.due_at <= now)
    if len(rows) < limit:
        rows += _take(
            conn, due, (m.lane, m.due_at), owner=owner, limit=limit - len(rows), until=now + lease
        )
    return sorted(
        (
            Claimed(
                r.id,
                r.tenant_id,
                Lane(r.lane),
                bytes(r.dest_cipher),
                r.body,
                r.attempts,
                r.expires_at,
                bytes(r.dest_index),
                r.carrier,
                r.channel,
                r.reason,
                r.time_zone,
            )
            for r in rows
        ),
        key=lambda c: (c.lane, c.id),
    )


def _take(
    conn: Connection,
    where: sa.ColumnElement[bool],
    order: tuple[Any, ...],
    *,
    owner: str,
    limit: int,
    until: datetime,
) -> list[Any]:
    pick = sa.select(messages.c.id).where(where).order_by(*order).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(messages)
        .where(messages.c.id.in_(pick.scalar_subquery()))
        .values(
            state=State.SENDING.value,
            lease_owner=owner,
            lease_until=until,
            attempts=messages.c.attempts + 1,
        )
        .returning(
            messages.c.id,
            messages.c.tenant_id,
            messages.c.lane,
            messages.c.dest_cipher,
            messages.c.body,
            messages.c.attempts,
            messages.c.expires_at,
            messages.c.dest_index,
            messages.c.carrier,
            messages.c.channel,
            messages.c.reason,
            messages.c.time_zone,
        )
    )
    return list(conn.execute(unscoped(stmt, "the dispatcher serves every tenant")).all())


def renew(conn: Connection, clock: Clock, *, owner: str, ids: list[int], lease: timedelta) -> int:
    """Extend the leases ``owner`` holds on ``ids`` (still sending); returns how many ran on."""
    m = messages
    result = conn.execute(
        unscoped(
            sa.update(m)
            .where(
                among(conn, m.c.id, ids, sa.BigInteger),
                m.c.state == State.SENDING.value,
                m.c.lease_owner == owner,
            )
            .values(lease_until=clock.now() + lease),
            "a dispatcher renews the leases it holds, whatever their tenant",
        )
    )
    return int(result.rowcount)


def move(
    conn: Connection,
    message_id: int,
    current: State,
    target: State,
    *,
    owner: str | None = None,
    **fields: Any,
) -> bool:
    """Compare-and-set a state change; False when another actor changed the message first.

    With ``owner``, the change only applies while that dispatcher still holds the lease.
    """
    check_move(current, target)
    values: dict[str, Any] = {"state": target.value, **fields}
    if target is not State.SENDING:
        values.setdefault("lease_owner", None)
        values.setdefault("lease_until", None)
    stmt = sa.update(messages).where(messages.c.id == message_id, messages.c.state == current.value)
    if owner is not None:
        stmt = stmt.where(messages.c.lease_owner == owner)
    result = conn.execute(unscoped(stmt.values(values), "the dispatcher serves every tenant"))
    return result.rowcount == 1


def get(conn: Connection, tenant_id: int, message_id: int) -> dict[str, Any]:
    """A message as its tenant may see it: the number masked, no ciphertext."""
    hidden = {"dest_cipher", "dest_index", "lease_owner", "lease_until"}
    cols = [c for c in messages.c if c.name not in hidden]
    row = (
        conn.execute(
            TenantScope(tenant_id).select(messages, *cols).where(messages.c.id == message_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such message", "找不到该短信")
    return dict(row)

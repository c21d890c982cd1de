"""The suppression list and the consent ledger: who must not get what, and why.

A number is identified by its blind index under ``tenant:<id>:phone`` (the same index the outbox
keeps), so the list is checked without decrypting anything. Reasons and what they stop:

* ``opt_out``: the recipient replied T / TD / 退订 …: marketing, for good (never expires).
* ``invalid``: a receipt said 空号 (or a number-status check did): everything, until
  ``expires_at`` (numbers are recycled; the default is 180 days), after which one more try
  may be made.
* ``complaint``: the recipient complained: marketing.
* ``manual``: blocked by the tenant: everything.

Suppressions are written with ``INSERT … ON CONFLICT DO NOTHING`` (one row per number and reason),
so a repeated TD or a second 空号 receipt changes nothing (only an *expired* 空号 row gives way
to a new verdict, see :func:`store`); an opt-out also appends a ``revoked`` record to the consent
ledger, which is append-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.sql import among
from hongyan.db.tables import consent_records, suppressions
from hongyan.dispatch.states import Lane
from hongyan.errors import ValidationFailed
from hongyan.security.keyring import KeyRing, mask_phone

REASONS = ("opt_out", "invalid", "complaint", "manual")
#: The source of the opt-out ``forget`` leaves: the number's data was erased at its request.
ERASURE = "erasure"
SCOPE_OF = {"opt_out": "marketing", "invalid": "all", "complaint": "marketing", "manual": "all"}
INVALID_FOR = timedelta(days=180)


def phone_context(tenant_id: int) -> str:
    return f"tenant:{tenant_id}:phone"


def stops(scope: str, lane: Lane) -> bool:
    """Whether a suppression of ``scope`` stops a message in ``lane`` (pure)."""
    return scope == "all" or (scope == "marketing" and lane is Lane.MARKETING)


@dataclass(frozen=True)
class NewSuppression:
    tenant_id: int
    phone: str  # E.164
    reason: str
    source: str
    detail: str | None = None


def add(conn: Connection, clock: Clock, keyring: KeyRing, items: Sequence[NewSuppression]) -> int:
    """Suppress numbers (set-based, idempotent); returns how many rows were new."""
    now = clock.now()
    by_tenant: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        if item.reason not in REASONS:
            raise ValidationFailed(
                f"Unknown suppression reason {item.reason!r}", f"未知的屏蔽原因 {item.reason!r}"
            )
        ctx = phone_context(item.tenant_id)
        by_tenant.setdefault(item.tenant_id, []).append(
            {
                "phone_index": keyring.blind_index(item.phone, ctx),
                "phone_cipher": keyring.encrypt(item.phone, ctx),
                "phone_masked": mask_phone(item.phone),
                "reason": item.reason,
                "scope": SCOPE_OF[item.reason],
                "source": item.source,
                "detail": item.detail,
                "created_at": now,
                "expires_at": now + INVALID_FOR if item.reason == "invalid" else None,
            }
        )
    return sum(store(conn, tenant_id, rows, now) for tenant_id, rows in by_tenant.items())


def store(conn: Connection, tenant_id: int, rows: Sequence[dict[str, Any]], now: datetime) -> int:
    """Insert ready-made suppression rows of one tenant, one per (number, reason).

    A row of the same number and reason that has expired gives way to the new one: a recycled
    number found 空号 again after its 180 days is suppressed again, not left out for good.
    Returns how many rows were new where the driver says.
    """
    scope = TenantScope(tenant_id)
    for reason in {r["reason"] for r in rows}:
        indexes = [r["phone_index"] for r in rows if r["reason"] == reason]
        for start in range(0, len(indexes), 500):
            conn.execute(
                scope.delete(suppressions).where(
                    suppressions.c.reason == reason,
                    suppressions.c.phone_index.in_(indexes[start : start + 500]),
                    suppressions.c.expires_at.is_not(None),
                    suppressions.c.expires_at <= now,
                )
            )
    return scope.insert_ignore(conn, suppressions, rows)


def lookup(
    conn: Connection, pairs: Iterable[tuple[int, bytes]], now: datetime
) -> dict[tuple[int, bytes], set[str]]:
    """The live suppression scopes of (tenant id, blind index) pairs, in one query per 500."""
    wanted = list({(t, bytes(i)) for t, i in pairs})
    out: dict[tuple[int, bytes], set[str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        tenants = {t for t, _ in chunk}
        keys = set(chunk)
        rows = conn.execute(
            unscoped(
                sa.select(
                    suppressions.c.tenant_id, suppressions.c.phone_index, suppressions.c.scope
                ).where(
                    among(conn, suppressions.c.phone_index, {i for _, i in chunk}, sa.LargeBinary),
                    among(conn, suppressions.c.tenant_id, tenants, sa.Integer),
                    sa.or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > now),
                ),
                "the dispatcher checks a batch of every tenant's numbers at once",
            )
        ).all()
        for r in rows:
            key = (r.tenant_id, bytes(r.phone_index))
            if key in keys:
                out.setdefault(key, set()).add(r.scope)
    return out


def is_suppressed(
    conn: Connection, keyring: KeyRing, tenant_id: int, phone: str, lane: Lane, now: datetime
) -> str | None:
    """The reason a message in ``lane`` to ``phone`` must not go, or None."""
    index = keyring.blind_index(phone, phone_context(tenant_id))
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(suppressions, suppressions.c.reason, suppressions.c.scope)
        .where(
            suppressions.c.phone_index == index,
            sa.or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > now),
        )
    ).all()
    for r in rows:
        if stops(r.scope, lane):
            return str(r.reason)
    return None


def list_for(conn: Connection, tenant_id: int, *, limit: int = 100) -> list[dict[str, Any]]:
    cols = [c for c in suppressions.c if c.name not in ("phone_cipher", "phone_index")]
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(suppressions, *cols)
        .order_by(suppressions.c.created_at.desc(), suppressions.c.id.desc())
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


# -- consent ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentChange:
    tenant_id: int
    phone: str
    purpose: str  # marketing, notification
    action: str  # granted, revoked
    source: str
    proof: str
    actor: str
    ip: str | None = None


def record_consent(
    conn: Connection, clock: Clock, keyring: KeyRing, changes: Sequence[ConsentChange]
) -> None:
    """Append to the ledger (never updates or deletes)."""
    now = clock.now()
    by_tenant: dict[int, list[dict[str, Any]]] = {}
    for c in changes:
        if c.purpose not in ("marketing", "notification") or c.action not in ("granted", "revoked"):
            raise ValidationFailed(
                "purpose is marketing or notification; action is granted or revoked",
                "用途须为 marketing 或 notification，动作须为 granted 或 revoked",
            )
        by_tenant.setdefault(c.tenant_id, []).append(
            {
                "phone_index": keyring.blind_index(c.phone, phone_context(c.tenant_id)),
                "purpose": c.purpose,
                "action": c.action,
                "source": c.source,
                "proof": c.proof,
                "actor": c.actor,
                "ip": c.ip,
                "at": now,
            }
        )
    for tenant_id, rows in by_tenant.items():
        TenantScope(tenant_id).insert_many(conn, consent_records, rows)


def current_consent(
    conn: Connection, keyring: KeyRing, tenant_id: int, phone: str, purpose: str
) -> dict[str, Any] | None:
    """The latest ledger record for a number and purpose (None: never recorded)."""
    index = keyring.blind_index(phone, phone_context(tenant_id))
    row = (
        conn.execute(
            TenantScope(tenant_id)
            .select(consent_records)
            .where(consent_records.c.phone_index == index, consent_records.c.purpose == purpose)
            .order_by(consent_records.c.at.desc(), consent_records.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def block(
    conn: Connection, clock: Clock, keyring: KeyRing, item: NewSuppression, actor: str
) -> bool:
    """Suppress one number as a person reports it (the API's ``POST /suppressions``, the CLI's
    ``suppressions add``); an opt-out also revokes marketing in the consent ledger, as a reply
    does, so the number's consent reads withdrawn. Returns whether the entry was new."""
    added = add(conn, clock, keyring, [item])
    if item.reason == "opt_out":
        record_consent(
            conn,
            clock,
            keyring,
            [
                ConsentChange(
                    tenant_id=item.tenant_id,
                    phone=item.phone,
                    purpose="marketing",
                    action="revoked",
                    source=item.source,
                    proof=item.detail or f"opt-out reported through the {item.source.upper()}",
                    actor=actor,
                )
            ],
        )
    return bool(added)


def erasures(conn: Connection, tenant_id: int, keys: Sequence[bytes]) -> dict[bytes, datetime]:
    """When each of these numbers (blind indexes) had its data erased at the person's request,
    if it did: ``forget`` leaves an opt-out from the source :data:`ERASURE`, dated the erasure
    (an opt-out never expires). A statement per 500 numbers: a tenant's opt-outs may be
    millions, so only the numbers asked about are read."""
    s = suppressions.c
    scope = TenantScope(tenant_id)
    unique = sorted(set(keys))
    out: dict[bytes, datetime] = {}
    for at in range(0, len(unique), 500):
        rows = conn.execute(
            scope.select(suppressions, s.phone_index, s.created_at).where(
                s.phone_index.in_(unique[at : at + 500]),
                s.reason == "opt_out",
                s.source == ERASURE,
            )
        )
        out.update((bytes(r.phone_index), r.created_at) for r in rows)
    return out


def remove_manual(conn: Connection, tenant_id: int, suppression_id: int) -> bool:
    """Lift a manual block (opt-outs and complaints are the recipient's to undo, not ours)."""
    result = conn.execute(
        TenantScope(tenant_id)
        .delete(suppressions)
        .where(suppressions.c.id == suppression_id, suppressions.c.reason == "manual")
    )
    return result.rowcount == 1

"""Number-status checks (空号检测): which numbers are empty, before a campaign pays for them.

Paid services (the carriers' and aggregators' 空号检测 APIs) answer for a list of numbers;
:class:`NumberStatusProvider` is the interface such an adapter implements. The built-in
:class:`ReceiptHistory` needs no service: it reads this tenant's own delivery receipts, where a
number's latest final message says ``invalid_number`` (空号) or ``delivered``.
:func:`check_contacts` runs a provider over a tenant's contacts and puts the empty numbers on
the suppression list (reason ``invalid``, 180 days, as a 空号 receipt does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts, messages
from hongyan.security.keyring import KeyRing

STATUSES = ("active", "empty", "unknown")


class NumberStatusProvider(Protocol):
    name: str

    def check(self, numbers: Sequence[str]) -> dict[str, str]:
        """Status of each E.164 number: ``active``, ``empty`` (空号) or ``unknown``."""
        ...


class ReceiptHistory:
    """What our own receipts say: the latest final message to the number."""

    name = "receipts"

    def __init__(self, conn: Connection, keyring: KeyRing, tenant_id: int) -> None:
        self.conn, self.keyring, self.tenant_id = conn, keyring, tenant_id

    def check(self, numbers: Sequence[str]) -> dict[str, str]:
        ctx = suppression.phone_context(self.tenant_id)
        by_index = {self.keyring.blind_index(n, ctx): n for n in numbers}
        out = dict.fromkeys(numbers, "unknown")
        m = messages.c
        rows = self.conn.execute(
            TenantScope(self.tenant_id)
            .select(messages, m.dest_index, m.state, m.reason, m.done_at)
            .where(
                m.dest_index.in_(list(by_index)),
                m.state.in_(("delivered", "undelivered")),
                m.done_at.is_not(None),
            )
            .order_by(m.done_at, m.id)
        ).all()
        for r in rows:  # later rows overwrite earlier ones: the latest verdict wins
            number = by_index[bytes(r.dest_index)]
            if r.state == "delivered":
                out[number] = "active"
            elif r.reason == "invalid_number":
                out[number] = "empty"
        return out


def check_contacts(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    provider: NumberStatusProvider,
    *,
    batch: int = 1000,
) -> dict[str, int]:
    """Check every contact's number; suppress the empty ones. Returns counts by status."""
    scope = TenantScope(tenant_id)
    ctx = suppression.phone_context(tenant_id)
    counts = dict.fromkeys(STATUSES, 0)
    last = 0
    while True:
        rows = conn.execute(
            scope.select(contacts, contacts.c.id, contacts.c.phone_cipher)
            .where(contacts.c.id > last)
            .order_by(contacts.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return counts
        last = int(rows[-1].id)
        numbers = [keyring.decrypt(bytes(r.phone_cipher), ctx) for r in rows]
        verdicts = provider.check(numbers)
        empty = [n for n in numbers if verdicts.get(n) == "empty"]
        for n in numbers:
            status = verdicts.get(n, "unknown")
            counts[status if status in counts else "unknown"] += 1
        if empty:
            suppression.add(
                conn,
                clock,
                keyring,
                [
                    suppression.NewSuppression(tenant_id, n, "invalid", provider.name, "空号检测")
                    for n in empty
                ],
            )


def count_contacts(conn: Connection, tenant_id: int) -> int:
    return int(conn.execute(TenantScope(tenant_id).select(contacts, sa.func.count())).scalar_one())

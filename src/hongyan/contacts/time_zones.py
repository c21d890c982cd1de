"""Filling in contacts' time zones from their numbers (``hongyan contacts zones``).

Every path that makes a contact (an import, an event from a new number, the demo) derives the
zone of a foreign number that has exactly one (:func:`hongyan.contacts.numbers.zone_of`) as it
writes the row; contacts stored before migration 0016 added ``contacts.time_zone`` have none.
:func:`backfill` gives them theirs, a batch at a time, each batch its own transaction (a run
that stops keeps what it did; running it again goes on, and does nothing more once done):

- read the next batch of the tenant's contacts without a zone whose number is not Chinese
  (``country <> 'CN'``: a Chinese number keeps the tenant's zone), by id after the last one
  read (keyset: the table is read once whatever its size, never loaded whole);
- decrypt each number (the ciphertext is the only copy of it) and derive its zone;
- one ``UPDATE … WHERE id IN (…) AND time_zone IS NULL`` per zone found in the batch, so a
  zone set meanwhile (a person, a file) is never overwritten.

A zone a person chose is never replaced: contacts with a zone are not read, and a contact whose
zone a person cleared through the API (``PATCH /contacts/{id}``: "the tenant's zone", recorded
in the audit log as ``contact.time_zone``) is left as they said. ``updated_at`` is not moved:
nothing the person gave changed (like ``number_province``, the zone comes from the number).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hongyan.clock import Clock
from hongyan.contacts.numbers import zone_of
from hongyan.contacts.suppression import phone_context
from hongyan.db.scope import TenantScope
from hongyan.db.tables import audit_log, contacts
from hongyan.security import audit
from hongyan.security.keyring import KeyRing

BATCH = 5000
ACTION = "contact.time_zone"  # the audit action of a person setting or clearing a zone


@dataclass
class BackfillResult:
    read: int = 0  # foreign contacts without a zone that were read
    filled: int = 0  # of them, given their number's zone
    kept: int = 0  # left as a person set them (their zone cleared on purpose)
    batches: int = 0
    seconds: float = 0.0
    by_zone: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "filled": self.filled,
            "no_single_zone": self.read - self.filled - self.kept,
            "kept": self.kept,
            "batches": self.batches,
            "seconds": round(self.seconds, 2),
            "by_zone": dict(self.by_zone.most_common()),
            "dry_run": self.dry_run,
        }


def chosen_by_a_person(conn: Connection, tenant_id: int) -> set[int]:
    """Contacts whose zone a person set or cleared (the audit log's ``contact.time_zone``)."""
    a = audit_log.c
    targets = conn.execute(
        TenantScope(tenant_id).select(audit_log, a.target).where(a.action == ACTION).distinct()
    ).scalars()
    out = set()
    for target in targets:
        kind, _, ident = str(target or "").partition(":")
        if kind == "contact" and ident.isdigit():
            out.add(int(ident))
    return out


def _batch(conn: Connection, tenant_id: int, after: int, size: int) -> list[Any]:
    c = contacts.c
    return list(
        conn.execute(
            TenantScope(tenant_id)
            .select(contacts, c.id, c.phone_cipher)
            .where(c.time_zone.is_(None), c.country != "CN", c.id > after)
            .order_by(c.id)
            .limit(size)
        )
    )


def backfill(
    engine: Engine,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    *,
    actor: str,
    batch: int = BATCH,
    dry_run: bool = False,
    progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Give the tenant's contacts without a zone their number's single zone (see the module
    doc); ``dry_run`` counts what would be filled and writes nothing."""
    started = time.perf_counter()
    result = BackfillResult(dry_run=dry_run)
    ctx = phone_context(tenant_id)
    scope = TenantScope(tenant_id)
    with engine.connect() as conn:
        kept = chosen_by_a_person(conn, tenant_id)
    a = audit_log.c
    after = 0
    while True:
        with engine.connect() if dry_run else engine.begin() as conn:
            rows = _batch(conn, tenant_id, after, batch)
            if not rows:
                break
            after = int(rows[-1].id)
            # A person may have cleared a zone since the run began: read their choices again
            # for this batch, in its transaction (a zone set meanwhile is kept by the UPDATE's
            # own "time_zone IS NULL").
            targets = [f"contact:{int(r.id)}" for r in rows]
            for target in conn.execute(
                scope.select(audit_log, a.target).where(a.action == ACTION, a.target.in_(targets))
            ).scalars():
                kept.add(int(str(target).partition(":")[2]))
            by_zone: dict[str, list[int]] = {}
            for row in rows:
                if int(row.id) in kept:
                    result.kept += 1
                    continue
                zone = zone_of(keyring.decrypt(row.phone_cipher, ctx))
                if zone is not None:
                    by_zone.setdefault(zone, []).append(int(row.id))
            for zone, ids in sorted(by_zone.items()):
                if dry_run:
                    n = len(ids)
                else:
                    n = int(
                        conn.execute(
                            scope.update(contacts)
                            .where(contacts.c.id.in_(ids), contacts.c.time_zone.is_(None))
                            .values(time_zone=zone)
                        ).rowcount
                    )
                result.filled += n
                result.by_zone[zone] += n
            result.read += len(rows)
            result.batches += 1
        if progress is not None:
            progress(result)
    result.seconds = time.perf_counter() - started
    if not dry_run:
        with engine.begin() as conn:
            audit.record(
                conn, clock, tenant_id=tenant_id, actor=actor, action="contacts.zones_backfill",
                detail={k: v for k, v in result.as_json().items() if k != "by_zone"},
            )  # fmt: skip
    return result


__all__ = ["BackfillResult", "backfill", "chosen_by_a_person"]

"""Re-encrypt every stored ciphertext under the active key, in batches, while the platform runs.

Each batch is its own short transaction; a row is only rewritten if its ciphertext is still the
one that was read (compare-and-set), so a concurrent writer is never overwritten and a crashed
rotation simply resumes. Every column that holds ciphertext is listed in ``ENCRYPTED_COLUMNS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hongyan.db.scope import unscoped
from hongyan.db.tables import (
    channels,
    contact_import_errors,
    contacts,
    inbound_messages,
    messages,
    suppressions,
    unrouted_inbound,
    users,
    webhook_endpoints,
)
from hongyan.security.keyring import KeyRing


@dataclass(frozen=True)
class EncryptedColumn:
    table: sa.Table
    column: str
    context: Callable[[Any], str]  # row -> associated-data context used at encryption
    needs: tuple[str, ...] = ("tenant_id",)  # the columns the context is made of


ENCRYPTED_COLUMNS: list[EncryptedColumn] = [
    EncryptedColumn(users, "phone_cipher", lambda r: f"tenant:{r.tenant_id}:user-phone"),
    EncryptedColumn(messages, "dest_cipher", lambda r: f"tenant:{r.tenant_id}:phone"),
    EncryptedColumn(suppressions, "phone_cipher", lambda r: f"tenant:{r.tenant_id}:phone"),
    EncryptedColumn(inbound_messages, "phone_cipher", lambda r: f"tenant:{r.tenant_id}:phone"),
    EncryptedColumn(unrouted_inbound, "phone_cipher", lambda r: "platform:phone", ()),
    EncryptedColumn(channels, "secret_cipher", lambda r: f"channel:{r.name}", ("name",)),
    EncryptedColumn(
        webhook_endpoints, "secret_cipher", lambda r: f"tenant:{r.tenant_id}:webhook-secret"
    ),
    # contacts (issue 4)
    EncryptedColumn(contacts, "phone_cipher", lambda r: f"tenant:{r.tenant_id}:phone"),
    EncryptedColumn(contacts, "name_cipher", lambda r: f"tenant:{r.tenant_id}:contact-name"),
    EncryptedColumn(
        contacts, "birthday_cipher", lambda r: f"tenant:{r.tenant_id}:contact-birthday"
    ),
    EncryptedColumn(
        contact_import_errors, "raw_cipher", lambda r: f"tenant:{r.tenant_id}:import-row"
    ),
]


@dataclass
class RotationReport:
    active_key: str
    scanned: int = 0
    rotated: int = 0
    skipped_changed: int = 0
    by_column: dict[str, int] = field(default_factory=dict)


def rotate(
    engine: Engine,
    keyring: KeyRing,
    *,
    batch_size: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> RotationReport:
    report = RotationReport(active_key=keyring.active_key_id)
    reason = "key rotation re-encrypts every tenant's ciphertext"
    for spec in ENCRYPTED_COLUMNS:
        table, col = spec.table, spec.table.c[spec.column]
        name = f"{table.name}.{spec.column}"
        report.by_column[name] = 0
        last_id = 0
        while True:
            with engine.begin() as conn:
                rows = conn.execute(
                    unscoped(
                        sa.select(table.c.id, col, *(table.c[n] for n in spec.needs))
                        .where(table.c.id > last_id, col.is_not(None))
                        .order_by(table.c.id)
                        .limit(batch_size),
                        reason,
                    )
                ).all()
                if not rows:
                    break
                last_id = rows[-1].id
                report.scanned += len(rows)
                updates = [
                    {"row_id": r.id, "old": r[1], "new": keyring.reencrypt(r[1], spec.context(r))}
                    for r in rows
                    if keyring.needs_rotation(r[1])
                ]
                for u in updates:
                    result = conn.execute(
                        unscoped(
                            sa.update(table)
                            .where(table.c.id == u["row_id"], col == u["old"])
                            .values({spec.column: u["new"]}),
                            reason,
                        )
                    )
                    if result.rowcount == 1:
                        report.rotated += 1
                        report.by_column[name] += 1
                    else:
                        report.skipped_changed += 1
            if progress:
                progress(name, report.scanned)
    return report


def pending(engine: Engine, keyring: KeyRing) -> int:
    """How many ciphertexts are not yet under the active key."""
    count = 0
    with engine.connect() as conn:
        for spec in ENCRYPTED_COLUMNS:
            col = spec.table.c[spec.column]
            stmt = unscoped(sa.select(col).where(col.is_not(None)), "rotation status")
            count += sum(1 for (blob,) in conn.execute(stmt) if keyring.needs_rotation(blob))
    return count

"""A tenant's signatures (【品牌名】): submitted for review, one of the approved ones the default.

Carriers send a marketing or notification text only under a signature the platform has checked
against the business's documents; a reviewer (:mod:`hongyan.content.review`) approves or rejects
each with a reason. A rejected signature can be submitted again with a better note.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope
from hongyan.db.tables import signatures
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.tenants.service import validate_signature

MAX_NOTE = 200


def _row(conn: Connection, tenant_id: int, **where: Any) -> Any:
    stmt = TenantScope(tenant_id).select(signatures)
    for key, value in where.items():
        stmt = stmt.where(signatures.c[key] == value)
    return conn.execute(stmt).mappings().first()


def _out(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k != "tenant_id"}


def listing(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    stmt = TenantScope(tenant_id).select(signatures).order_by(signatures.c.id)
    return [_out(r) for r in conn.execute(stmt).mappings()]


def submit(
    conn: Connection, clock: Clock, tenant_id: int, text: str, *, note: str = "", actor: str
) -> dict[str, Any]:
    """Submit a signature for review (again, if it was rejected)."""
    text = validate_signature(text)
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ValidationFailed(
            f"The note is at most {MAX_NOTE} characters", f"说明最多 {MAX_NOTE} 个字符"
        )
    scope = TenantScope(tenant_id)
    now = clock.now()
    existing = _row(conn, tenant_id, text=text)
    if existing is not None:
        if existing["status"] != "rejected":
            raise Conflict(
                f"{text} is already {existing['status']}",
                f"签名{text}已{'通过审核' if existing['status'] == 'approved' else '在审核中'}",
            )
        conn.execute(
            scope.update(signatures)
            .where(signatures.c.id == existing["id"])
            .values(
                status="pending",
                note=note or existing["note"],
                reason=None,
                reviewed_at=None,
                reviewed_by=None,
                created_at=now,
            )
        )
        signature_id = int(existing["id"])
    else:
        result = conn.execute(
            scope.insert(signatures),
            {"text": text, "status": "pending", "note": note or None, "created_at": now},
        )
        assert result.inserted_primary_key is not None
        signature_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="signature.submit",
        target=f"signature:{signature_id}",
        detail={"text": text},
    )
    return _out(_row(conn, tenant_id, id=signature_id))


def set_default(
    conn: Connection, clock: Clock, tenant_id: int, signature_id: int, *, actor: str
) -> dict[str, Any]:
    """Make an approved signature the one the lint's fix puts in front of a text."""
    row = _row(conn, tenant_id, id=signature_id)
    if row is None:
        raise NotFound("No such signature", "找不到该签名")
    if row["status"] != "approved":
        raise Conflict(
            "Only an approved signature can be the default", "只有已通过审核的签名可以设为默认"
        )
    scope = TenantScope(tenant_id)
    conn.execute(scope.update(signatures).values(is_default=False))
    conn.execute(
        scope.update(signatures).where(signatures.c.id == signature_id).values(is_default=True)
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="signature.default",
        target=f"signature:{signature_id}",
    )
    return _out(_row(conn, tenant_id, id=signature_id))


def withdraw(
    conn: Connection, clock: Clock, tenant_id: int, signature_id: int, *, actor: str
) -> None:
    """Remove a signature that is not approved (pending or rejected)."""
    row = _row(conn, tenant_id, id=signature_id)
    if row is None:
        raise NotFound("No such signature", "找不到该签名")
    if row["status"] == "approved":
        raise Conflict("An approved signature cannot be withdrawn", "已通过审核的签名不能撤回")
    conn.execute(TenantScope(tenant_id).delete(signatures).where(signatures.c.id == signature_id))
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="signature.withdraw",
        target=f"signature:{signature_id}",
        detail={"text": row["text"]},
    )

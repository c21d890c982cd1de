"""The audit log: who did what, when, from where. Never secrets, never plaintext numbers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import audit_log

FORBIDDEN_KEYS = {"password", "secret", "token", "key", "phone", "number", "api_key"}


def record(
    conn: Connection,
    clock: Clock,
    *,
    tenant_id: int | None,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
) -> None:
    detail = detail or {}
    leaked = FORBIDDEN_KEYS.intersection(k.lower() for k in detail)
    if leaked:
        raise ValueError(f"audit detail may not carry {sorted(leaked)}")
    row = {
        "actor": actor,
        "action": action,
        "target": target,
        "detail": detail,
        "ip": ip,
        "at": clock.now(),
    }
    if tenant_id is None:
        conn.execute(unscoped(sa.insert(audit_log), "platform-level audit entry"), row)
    else:
        conn.execute(TenantScope(tenant_id).insert(audit_log), row)


def recent(conn: Connection, tenant_id: int, limit: int = 50) -> list[dict[str, Any]]:
    scope = TenantScope(tenant_id)
    stmt = scope.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]

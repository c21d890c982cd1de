"""API keys: shown once, stored as a SHA-256 hash (the secret carries 256 random bits)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import api_keys, tenants
from hongyan.errors import AuthenticationFailed
from hongyan.security.roles import Role

PREFIX = "hy_"


@dataclass(frozen=True)
class ApiPrincipal:
    tenant_id: int
    key_id: int
    role: Role


@dataclass(frozen=True)
class NewApiKey:
    id: int
    name: str
    role: Role
    key: str  # the only time the full key exists outside the caller's hands


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def create(conn: Connection, clock: Clock, tenant_id: int, name: str, role: Role) -> NewApiKey:
    public = secrets.token_hex(6)
    key = f"{PREFIX}{public}_{secrets.token_urlsafe(32)}"
    result = conn.execute(
        TenantScope(tenant_id).insert(api_keys),
        {
            "name": name,
            "prefix": public,
            "secret_hash": _digest(key),
            "role": Role(role).value,
            "created_at": clock.now(),
        },
    )
    assert result.inserted_primary_key is not None
    return NewApiKey(id=int(result.inserted_primary_key[0]), name=name, role=Role(role), key=key)


def authenticate(conn: Connection, clock: Clock, key: str) -> ApiPrincipal:
    """Resolve a presented key to its tenant and role, or raise AuthenticationFailed."""
    fail = AuthenticationFailed("Invalid API key", "API 密钥无效")
    if not key.startswith(PREFIX) or key.count("_") < 2:
        raise fail
    public = key[len(PREFIX) :].split("_", 1)[0]
    stmt = unscoped(
        sa.select(api_keys, tenants.c.status.label("tenant_status"))
        .join(tenants, tenants.c.id == api_keys.c.tenant_id)
        .where(api_keys.c.prefix == public),
        "API key lookup happens before the tenant is known",
    )
    row = conn.execute(stmt).mappings().first()
    if row is None or not hmac.compare_digest(row["secret_hash"], _digest(key)):
        raise fail
    if row["revoked_at"] is not None or row["tenant_status"] != "active":
        raise fail
    # Touch last_used_at at most once a minute, so a busy key does not make every request a write.
    now = clock.now()
    if row["last_used_at"] is None or now - row["last_used_at"] > timedelta(minutes=1):
        scope = TenantScope(row["tenant_id"])
        conn.execute(
            scope.update(api_keys).where(api_keys.c.id == row["id"]).values(last_used_at=now)
        )
    return ApiPrincipal(tenant_id=row["tenant_id"], key_id=row["id"], role=Role(row["role"]))


def revoke(conn: Connection, clock: Clock, tenant_id: int, key_id: int) -> bool:
    scope = TenantScope(tenant_id)
    result = conn.execute(
        scope.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    return result.rowcount == 1


def listing(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    scope = TenantScope(tenant_id)
    cols = [
        api_keys.c[c]
        for c in ("id", "name", "prefix", "role", "created_at", "last_used_at", "revoked_at")
    ]
    return [dict(r) for r in conn.execute(scope.select(api_keys, *cols)).mappings()]

"""Console sessions: a random token in an HttpOnly cookie, its hash and expiry in the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import sessions, tenants, users
from hongyan.errors import AuthenticationFailed
from hongyan.security.roles import Role


@dataclass(frozen=True)
class SessionPrincipal:
    session_id: int
    tenant_id: int
    user_id: int
    role: Role
    csrf_token: str
    email: str
    name: str
    locale: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def start(
    conn: Connection,
    clock: Clock,
    *,
    tenant_id: int,
    user_id: int,
    max_age: int,
    ip: str | None = None,
) -> tuple[str, str]:
    """Open a session; returns (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = clock.now()
    conn.execute(
        TenantScope(tenant_id).insert(sessions),
        {
            "user_id": user_id,
            "token_hash": _digest(token),
            "csrf_token": csrf,
            "created_at": now,
            "expires_at": now + timedelta(seconds=max_age),
            "ip": ip,
        },
    )
    return token, csrf


def resolve(conn: Connection, clock: Clock, token: str) -> SessionPrincipal:
    expired = AuthenticationFailed(
        "Your session has expired; please log in again", "会话已过期，请重新登录"
    )
    stmt = unscoped(
        sa.select(
            sessions.c.id,
            sessions.c.tenant_id,
            sessions.c.user_id,
            sessions.c.csrf_token,
            sessions.c.expires_at,
            sessions.c.revoked_at,
            users.c.role,
            users.c.email,
            users.c.name,
            users.c.locale,
            users.c.is_active,
            tenants.c.status,
        )
        .join(
            users,
            sa.and_(users.c.id == sessions.c.user_id, users.c.tenant_id == sessions.c.tenant_id),
        )
        .join(tenants, tenants.c.id == sessions.c.tenant_id)
        .where(sessions.c.token_hash == _digest(token)),
        "a session token is resolved before the tenant is known",
    )
    row = conn.execute(stmt).mappings().first()
    if (
        row is None
        or row["revoked_at"] is not None
        or row["expires_at"] <= clock.now()
        or not row["is_active"]
        or row["status"] != "active"
    ):
        raise expired
    return SessionPrincipal(
        session_id=row["id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        role=Role(row["role"]),
        csrf_token=row["csrf_token"],
        email=row["email"],
        name=row["name"],
        locale=row["locale"],
    )


def end(conn: Connection, clock: Clock, principal: SessionPrincipal) -> None:
    scope = TenantScope(principal.tenant_id)
    conn.execute(
        scope.update(sessions)
        .where(sessions.c.id == principal.session_id)
        .values(revoked_at=clock.now())
    )

"""Platform staff: the people who run the platform, members of no customer tenant.

A reviewer approves or rejects the signatures and templates tenants submit, the workflow carriers
require. Staff are kept apart from tenants' users on purpose:

- their own table (``staff``), login (``/staff/login``), session cookie and API keys
  (``hys_…``), so a tenant's owner can never grant or hold staff powers, and a staff member
  has no place in any tenant's user list;
- a staff principal carries no tenant id. What a reviewer reads across tenants (the review
  queue) goes through the tenant guard's named path, ``unscoped(stmt, reason)``; what it
  changes (one decision) is written through ``TenantScope(<the item's tenant>)``;
- every decision lands in the audit log of the tenant it concerns, with the reviewer as
  ``staff:<id>``, and staff logins in the platform's own audit entries.

Staff are created from the command line (``hongyan staff create``) by whoever runs the platform.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.clock import Clock
from hongyan.db.scope import unscoped
from hongyan.db.tables import staff, staff_api_keys, staff_sessions, users
from hongyan.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from hongyan.security import audit
from hongyan.security.passwords import DUMMY_HASH, hash_password, verify_password

KEY_PREFIX = "hys_"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
WHY_USERS = "a staff e-mail may not also be a tenant user's"


class StaffRole(StrEnum):
    REVIEWER = "reviewer"  # reviews signatures and templates of every tenant


@dataclass(frozen=True)
class StaffMember:
    id: int
    email: str
    name: str
    role: StaffRole
    locale: str
    is_active: bool


@dataclass(frozen=True)
class StaffPrincipal:
    """Who is acting: a staff member, by console session or API key."""

    staff_id: int
    email: str
    name: str
    role: StaffRole
    locale: str
    csrf_token: str = ""  # the session's; empty for an API key
    session_id: int | None = None

    @property
    def actor(self) -> str:
        return f"staff:{self.staff_id}"

    def require_reviewer(self) -> None:
        if self.role is not StaffRole.REVIEWER:
            raise PermissionDenied()


def _member(row: Any) -> StaffMember:
    return StaffMember(
        row.id, row.email, row.name, StaffRole(row.role), row.locale, bool(row.is_active)
    )


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def create(
    conn: Connection,
    clock: Clock,
    *,
    email: str,
    name: str,
    password: str,
    role: StaffRole | str = StaffRole.REVIEWER,
    locale: str = "zh-CN",
) -> StaffMember:
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise ValidationFailed(f"Not an e-mail address: {email!r}", f"邮箱格式不正确：{email!r}")
    try:
        role = StaffRole(role)
    except ValueError as exc:
        raise ValidationFailed(f"Unknown staff role {role!r}", f"未知的平台角色 {role!r}") from exc
    if locale not in ("zh-CN", "en"):
        raise ValidationFailed("Locale is zh-CN or en", "语言须为 zh-CN 或 en")
    taken = conn.execute(unscoped(sa.select(users.c.id).where(users.c.email == email), WHY_USERS))
    if taken.first() is not None:
        raise Conflict(
            f"{email} is a tenant's user; platform staff use an address of their own",
            f"{email} 是某租户的用户；平台人员须使用单独的邮箱",
        )
    try:
        with conn.begin_nested():
            result = conn.execute(
                sa.insert(staff).values(
                    email=email,
                    name=name.strip() or email,
                    role=role.value,
                    password_hash=hash_password(password),
                    locale=locale,
                    created_at=clock.now(),
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"Staff member {email} exists", f"平台人员 {email} 已存在") from exc
    assert result.inserted_primary_key is not None
    staff_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=None,
        actor="cli",
        action="staff.create",
        target=f"staff:{staff_id}",
        detail={"role": role.value},
    )
    return StaffMember(staff_id, email, name.strip() or email, role, locale, True)


def get_by_email(conn: Connection, email: str) -> StaffMember:
    row = conn.execute(sa.select(staff).where(staff.c.email == email.strip().lower())).first()
    if row is None:
        raise NotFound(f"No staff member {email}", f"没有平台人员 {email}")
    return _member(row)


def listing(conn: Connection) -> list[StaffMember]:
    return [_member(r) for r in conn.execute(sa.select(staff).order_by(staff.c.id))]


def set_active(conn: Connection, clock: Clock, email: str, active: bool) -> StaffMember:
    member = get_by_email(conn, email)
    conn.execute(sa.update(staff).where(staff.c.id == member.id).values(is_active=active))
    if not active:  # a deactivated member's sessions end now
        conn.execute(
            sa.update(staff_sessions)
            .where(staff_sessions.c.staff_id == member.id, staff_sessions.c.revoked_at.is_(None))
            .values(revoked_at=clock.now())
        )
    audit.record(
        conn,
        clock,
        tenant_id=None,
        actor="cli",
        action="staff.activate" if active else "staff.deactivate",
        target=f"staff:{member.id}",
    )
    return get_by_email(conn, email)


def principal_of(
    member: StaffMember, csrf: str = "", session_id: int | None = None
) -> StaffPrincipal:
    return StaffPrincipal(
        member.id, member.email, member.name, member.role, member.locale, csrf, session_id
    )


def authenticate(conn: Connection, clock: Clock, email: str, password: str) -> StaffMember:
    """Check a staff login; the same error and about the same time whether the member exists."""
    row = conn.execute(sa.select(staff).where(staff.c.email == email.strip().lower())).first()
    fail = AuthenticationFailed("Wrong e-mail or password", "邮箱或密码错误")
    if row is None:
        verify_password(DUMMY_HASH, password)
        raise fail
    if not verify_password(row.password_hash, password) or not row.is_active:
        raise fail
    conn.execute(sa.update(staff).where(staff.c.id == row.id).values(last_login_at=clock.now()))
    return _member(row)


# -- console sessions -----------------------------------------------------------------------


def start_session(
    conn: Connection, clock: Clock, member: StaffMember, *, max_age: int, ip: str | None = None
) -> tuple[str, str]:
    """Open a staff session; returns (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = clock.now()
    conn.execute(
        sa.insert(staff_sessions).values(
            staff_id=member.id,
            token_hash=_digest(token),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=max_age),
            ip=ip,
        )
    )
    audit.record(
        conn, clock, tenant_id=None, actor=f"staff:{member.id}", action="staff.login", ip=ip
    )
    return token, csrf


def resolve_session(conn: Connection, clock: Clock, token: str) -> StaffPrincipal:
    row = conn.execute(
        sa.select(staff, staff_sessions.c.id.label("sid"), staff_sessions.c.csrf_token)
        .join(staff_sessions, staff_sessions.c.staff_id == staff.c.id)
        .where(
            staff_sessions.c.token_hash == _digest(token),
            staff_sessions.c.revoked_at.is_(None),
            staff_sessions.c.expires_at > clock.now(),
        )
    ).first()
    if row is None or not row.is_active:
        raise AuthenticationFailed(
            "Your session has expired; please log in again", "会话已过期，请重新登录"
        )
    return principal_of(_member(row), row.csrf_token, row.sid)


def end_session(conn: Connection, clock: Clock, principal: StaffPrincipal) -> None:
    conn.execute(
        sa.update(staff_sessions)
        .where(staff_sessions.c.id == principal.session_id)
        .values(revoked_at=clock.now())
    )


# -- API keys -------------------------------------------------------------------------------


def create_key(conn: Connection, clock: Clock, member: StaffMember, name: str) -> tuple[int, str]:
    """A staff API key (``hys_<public>_<secret>``), shown once; returns (id, key)."""
    public = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    result = conn.execute(
        sa.insert(staff_api_keys).values(
            staff_id=member.id,
            name=name,
            prefix=public,
            secret_hash=_digest(key),
            created_at=clock.now(),
        )
    )
    assert result.inserted_primary_key is not None
    key_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=None,
        actor="cli",
        action="staff.apikey.create",
        target=f"staff:{member.id}",
        detail={"key_id": key_id, "name": name},
    )
    return key_id, key


def is_staff_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX)


def authenticate_key(conn: Connection, clock: Clock, key: str) -> StaffPrincipal:
    fail = AuthenticationFailed("Invalid API key", "API 密钥无效")
    if not is_staff_key(key) or key.count("_") < 2:
        raise fail
    public = key[len(KEY_PREFIX) :].split("_", 1)[0]
    row = conn.execute(
        sa.select(
            staff,
            staff_api_keys.c.id.label("key_id"),
            staff_api_keys.c.secret_hash,
            staff_api_keys.c.revoked_at,
            staff_api_keys.c.last_used_at,
        )
        .join(staff_api_keys, staff_api_keys.c.staff_id == staff.c.id)
        .where(staff_api_keys.c.prefix == public)
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(key)):
        raise fail
    if row.revoked_at is not None or not row.is_active:
        raise fail
    now = clock.now()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        conn.execute(
            sa.update(staff_api_keys)
            .where(staff_api_keys.c.id == row.key_id)
            .values(last_used_at=now)
        )
    return principal_of(_member(row))


def revoke_key(conn: Connection, clock: Clock, key_id: int) -> bool:
    result = conn.execute(
        sa.update(staff_api_keys)
        .where(staff_api_keys.c.id == key_id, staff_api_keys.c.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    return result.rowcount == 1

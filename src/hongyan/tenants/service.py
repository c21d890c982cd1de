"""Tenants (the businesses on the platform), their signatures, policies and users."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import policies, signatures, tenants, users
from hongyan.errors import AuthenticationFailed, Conflict, NotFound, ValidationFailed
from hongyan.security.keyring import KeyRing, mask_phone
from hongyan.security.passwords import DUMMY_HASH, hash_password, verify_password
from hongyan.security.roles import Role

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$")
# 【品牌名】: full-width brackets around 2 to 16 characters that are not brackets themselves.
SIGNATURE = re.compile(r"^【[^【】\[\]\s]{2,16}】$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
PHONE_CONTEXT = "user-phone"


@dataclass(frozen=True)
class Tenant:
    id: int
    slug: str
    name: str
    timezone: str
    status: str


@dataclass(frozen=True)
class User:
    id: int
    tenant_id: int
    email: str
    name: str
    role: Role
    locale: str


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.slug, row.name, row.timezone, row.status)


def validate_signature(text: str) -> str:
    text = text.strip()
    if not SIGNATURE.match(text):
        raise ValidationFailed(
            "A signature is 2 to 16 characters inside full-width brackets, "
            f"like 【鸿雁茶饮】: {text!r}",
            f"签名须为全角括号包含的 2 到 16 个字符，例如【鸿雁茶饮】：{text!r}",
        )
    return text


def create_tenant(
    conn: Connection,
    clock: Clock,
    *,
    slug: str,
    name: str,
    signature: str | None = None,
    timezone: str = "Asia/Shanghai",
) -> Tenant:
    if not SLUG.match(slug):
        raise ValidationFailed(
            "A tenant slug is 3 to 40 lower-case letters, digits or dashes",
            "租户标识须为 3 到 40 位小写字母、数字或连字符",
        )
    if not name.strip():
        raise ValidationFailed("A tenant needs a name", "租户名称不能为空")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(f"Unknown time zone {timezone!r}", f"未知时区 {timezone!r}") from exc
    sig = validate_signature(signature) if signature else None
    now = clock.now()
    with conn.begin_nested():
        try:
            result = conn.execute(
                sa.insert(tenants).values(
                    slug=slug, name=name.strip(), timezone=timezone, created_at=now
                )
            )
        except IntegrityError as exc:
            raise Conflict(f"Tenant {slug!r} exists", f"租户 {slug!r} 已存在") from exc
        assert result.inserted_primary_key is not None
        tenant_id = int(result.inserted_primary_key[0])
        scope = TenantScope(tenant_id)
        conn.execute(scope.insert(policies), {"extra": {}, "updated_at": now})
        if sig:
            conn.execute(
                scope.insert(signatures),
                {
                    "text": sig,
                    "status": "approved",
                    "is_default": True,
                    "created_at": now,
                    "reviewed_at": now,
                },
            )
    return Tenant(tenant_id, slug, name.strip(), timezone, "active")


def set_sms_ext(conn: Connection, tenant_id: int, ext: str | None) -> None:
    """Give a tenant its extension code (扩展码): 1 to 8 digits, unique, or None to clear.

    Messages go out from ``<channel source_addr><ext>``; replies addressed there find the tenant.
    """
    if ext is not None and not (ext.isascii() and ext.isdigit() and 1 <= len(ext) <= 8):
        raise ValidationFailed("An extension code is 1 to 8 digits", "扩展码须为 1 到 8 位数字")
    taken = conn.execute(
        sa.select(tenants.c.id).where(tenants.c.sms_ext == ext, tenants.c.id != tenant_id)
    ).first()
    if ext is not None and taken is not None:
        raise Conflict(f"Extension {ext} is taken", f"扩展码 {ext} 已被占用")
    # A code that is a prefix of another would make replies ambiguous.
    if ext is not None:
        others = [
            r.sms_ext
            for r in conn.execute(
                sa.select(tenants.c.sms_ext).where(
                    tenants.c.sms_ext.is_not(None), tenants.c.id != tenant_id
                )
            )
        ]
        clash = next((o for o in others if o.startswith(ext) or ext.startswith(o)), None)
        if clash is not None:
            raise Conflict(
                f"Extension {ext} and {clash} would be ambiguous (one is a prefix of the other)",
                f"扩展码 {ext} 与 {clash} 互为前缀，回复无法区分",
            )
    try:
        with conn.begin_nested():
            result = conn.execute(
                sa.update(tenants).where(tenants.c.id == tenant_id).values(sms_ext=ext)
            )
    except IntegrityError:  # another tenant took the code since the check above
        raise Conflict(f"Extension {ext} is taken", f"扩展码 {ext} 已被占用") from None
    if result.rowcount != 1:
        raise NotFound(f"No tenant with id {tenant_id}", f"租户 {tenant_id} 不存在")


def get_tenant(conn: Connection, slug: str) -> Tenant:
    row = conn.execute(sa.select(tenants).where(tenants.c.slug == slug)).first()
    if row is None:
        raise NotFound(f"Unknown tenant {slug!r}", f"租户 {slug!r} 不存在")
    return _tenant(row)


def get_tenant_by_id(conn: Connection, tenant_id: int) -> Tenant:
    row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise NotFound()
    return _tenant(row)


def list_tenants(conn: Connection) -> list[Tenant]:
    return [_tenant(r) for r in conn.execute(sa.select(tenants).order_by(tenants.c.id))]


def signatures_of(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    scope = TenantScope(tenant_id)
    stmt = scope.select(signatures).order_by(signatures.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def policy_of(conn: Connection, tenant_id: int) -> dict[str, Any]:
    row = conn.execute(TenantScope(tenant_id).select(policies)).mappings().first()
    if row is None:
        raise NotFound()
    return dict(row)


# -- policy changes (content) -------------------------------------------------------------------

POLICY_FIELDS = (
    "marketing_allowed",
    "require_ad_mark",
    "ad_mark",
    "unsubscribe_text",
    "max_parts",
    "notification_template_required",
)


def update_policy(conn: Connection, clock: Clock, tenant_id: int, **changes: Any) -> dict[str, Any]:
    """Change a tenant's policy; only the fields named in POLICY_FIELDS, each checked."""
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise ValidationFailed(f"Unknown policy fields: {unknown}", f"未知的策略字段：{unknown}")
    values = {k: v for k, v in changes.items() if v is not None}
    if "max_parts" in values and not 1 <= int(values["max_parts"]) <= 10:
        raise ValidationFailed("max_parts is 1 to 10", "最大条数须为 1 到 10")
    for key in ("unsubscribe_text", "ad_mark"):
        if key in values:
            text = str(values[key]).strip()
            if not 1 <= len(text) <= 20 or "{" in text or "}" in text:
                raise ValidationFailed(
                    f"{key} is 1 to 20 characters without braces", f"{key} 须为 1 到 20 个字符"
                )
            values[key] = text
    if values:
        values["updated_at"] = clock.now()
        conn.execute(TenantScope(tenant_id).update(policies).values(values))
    return policy_of(conn, tenant_id)


def create_user(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    *,
    tenant_id: int,
    email: str,
    name: str,
    role: Role | str,
    password: str,
    phone: str | None = None,
    locale: str = "zh-CN",
) -> User:
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise ValidationFailed(f"Not an e-mail address: {email!r}", f"邮箱格式不正确：{email!r}")
    try:
        role = Role(role)
    except ValueError as exc:
        raise ValidationFailed(
            f"Unknown role {role!r}; one of {', '.join(r.value for r in Role)}",
            f"未知角色 {role!r}",
        ) from exc
    if locale not in ("zh-CN", "en"):
        raise ValidationFailed("Locale is zh-CN or en", "语言须为 zh-CN 或 en")
    row: dict[str, Any] = {
        "email": email,
        "name": name.strip() or email,
        "role": role.value,
        "password_hash": hash_password(password),
        "locale": locale,
        "created_at": clock.now(),
    }
    if phone:
        digits = phone.strip()
        if not re.fullmatch(r"\+?[0-9]{6,15}", digits):
            raise ValidationFailed("Not a phone number", "手机号码格式不正确")
        context = f"tenant:{tenant_id}:{PHONE_CONTEXT}"
        row["phone_cipher"] = keyring.encrypt(digits, context)
        row["phone_index"] = keyring.blind_index(digits, context)
    with conn.begin_nested():
        try:
            result = conn.execute(TenantScope(tenant_id).insert(users), row)
        except IntegrityError as exc:
            raise Conflict(f"User {email} exists", f"用户 {email} 已存在") from exc
    assert result.inserted_primary_key is not None
    return User(int(result.inserted_primary_key[0]), tenant_id, email, row["name"], role, locale)


def user_phone_masked(conn: Connection, keyring: KeyRing, tenant_id: int, user_id: int) -> str:
    stmt = TenantScope(tenant_id).select(users, users.c.phone_cipher).where(users.c.id == user_id)
    blob = conn.execute(stmt).scalar()
    if blob is None:
        return ""
    return mask_phone(keyring.decrypt(blob, f"tenant:{tenant_id}:{PHONE_CONTEXT}"))


def authenticate_user(conn: Connection, clock: Clock, email: str, password: str) -> User:
    """Check a login; the same error and about the same time whether the user exists or not."""
    stmt = unscoped(
        sa.select(users, tenants.c.status.label("tenant_status"))
        .join(tenants, tenants.c.id == users.c.tenant_id)
        .where(users.c.email == email.strip().lower()),
        "login looks the user up before the tenant is known",
    )
    row = conn.execute(stmt).mappings().first()
    fail = AuthenticationFailed("Wrong e-mail or password", "邮箱或密码错误")
    if row is None:
        verify_password(DUMMY_HASH, password)
        raise fail
    if not verify_password(row["password_hash"], password):
        raise fail
    if not row["is_active"] or row["tenant_status"] != "active":
        raise fail
    scope = TenantScope(row["tenant_id"])
    conn.execute(
        scope.update(users).where(users.c.id == row["id"]).values(last_login_at=clock.now())
    )
    return User(
        row["id"], row["tenant_id"], row["email"], row["name"], Role(row["role"]), row["locale"]
    )


def get_user(conn: Connection, tenant_id: int, user_id: int) -> User:
    row = conn.execute(TenantScope(tenant_id).select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFound()
    return User(row.id, row.tenant_id, row.email, row.name, Role(row.role), row.locale)


def list_users(conn: Connection, tenant_id: int) -> list[User]:
    stmt = TenantScope(tenant_id).select(users).order_by(users.c.id)
    return [
        User(r.id, r.tenant_id, r.email, r.name, Role(r.role), r.locale) for r in conn.execute(stmt)
    ]

"""The demo tenant: what `make demo` shows a newcomer. Later capabilities add their part here."""

from __future__ import annotations

import os
import secrets
from typing import Any

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.scope import TenantScope
from hongyan.db.tables import users
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.security import apikeys, audit
from hongyan.security.passwords import hash_password
from hongyan.security.roles import Role
from hongyan.tenants import service

SLUG = "demo"
EMAIL = "owner@demo.hongyan.local"


def _login_password(runtime: Runtime) -> str:
    """A random owner password, made once and kept in var/demo-login.txt (0600)."""
    path = runtime.settings.var_dir / "demo-login.txt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


def prepare(runtime: Runtime) -> dict[str, Any]:
    migrate.upgrade(runtime.engine)
    password = _login_password(runtime)
    clock = runtime.clock
    with runtime.engine.begin() as conn:
        try:
            tenant = service.get_tenant(conn, SLUG)
            scope = TenantScope(tenant.id)
            # Keep the printed password true even if someone changed it.
            conn.execute(
                scope.update(users)
                .where(users.c.email == EMAIL)
                .values(password_hash=hash_password(password))
            )
            key_note = "created on first run (see `hongyan apikey create --tenant demo`)"
        except NotFound:
            tenant = service.create_tenant(
                conn, clock, slug=SLUG, name="鸿雁茶饮（演示）", signature="【鸿雁茶饮】"
            )
            service.create_user(
                conn,
                clock,
                runtime.keyring,
                tenant_id=tenant.id,
                email=EMAIL,
                name="演示店长",
                role=Role.OWNER,
                password=password,
                phone="+8613800138000",
            )
            new = apikeys.create(conn, clock, tenant.id, "demo", Role.OPERATOR)
            key_note = new.key
            audit.record(
                conn,
                clock,
                tenant_id=tenant.id,
                actor="demo",
                action="demo.prepare",
                target=f"tenant:{SLUG}",
            )
        count = conn.execute(TenantScope(tenant.id).select(users, sa.func.count())).scalar_one()
    return {
        "tenant": SLUG,
        "email": EMAIL,
        "password": password,
        "users": count,
        "api_key_note": key_note,
    }

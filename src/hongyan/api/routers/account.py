"""The caller's own tenant: who am I, signatures, policy, users, API keys, audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.security import apikeys, audit
from hongyan.security.roles import Permission, Role
from hongyan.tenants import service

router = api_router("account")


class TenantOut(BaseModel):
    id: int
    slug: str
    name: str
    timezone: str
    role: Role
    signatures: list[str]
    policy: dict[str, Any]


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.OPERATOR


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    role: Role
    key: str = Field(description="Shown once; store it now, it cannot be read again")


class UserIn(BaseModel):
    email: str = Field(max_length=254)
    name: str = Field(default="", max_length=100)
    role: Role
    password: str = Field(min_length=1, max_length=200)
    locale: str = "zh-CN"


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: Role
    locale: str


class AuditEntry(BaseModel):
    id: int
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    ip: str | None
    at: datetime


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("/tenant", response_model=TenantOut, summary="The caller's tenant")
def my_tenant(who: Principal = Depends(get_principal), conn: Connection = CONN) -> TenantOut:
    tenant = service.get_tenant_by_id(conn, who.tenant_id)
    sigs = [
        s["text"] for s in service.signatures_of(conn, who.tenant_id) if s["status"] == "approved"
    ]
    policy = service.policy_of(conn, who.tenant_id)
    policy = {k: v for k, v in policy.items() if k not in ("tenant_id", "updated_at")}
    return TenantOut(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        timezone=tenant.timezone,
        role=who.role,
        signatures=sigs,
        policy=policy,
    )


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="The tenant's API keys")
def list_keys(who: Principal = Depends(get_principal), conn: Connection = CONN) -> list[ApiKeyOut]:
    who.require(Permission.MANAGE_KEYS)
    return [ApiKeyOut(**row) for row in apikeys.listing(conn, who.tenant_id)]


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201, summary="Create a key")
def create_key(
    body: ApiKeyIn,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> ApiKeyCreated:
    who.require(Permission.MANAGE_KEYS)
    new = apikeys.create(conn, runtime.clock, who.tenant_id, body.name, body.role)
    audit.record(
        conn,
        runtime.clock,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="apikey.create",
        target=f"apikey:{new.id}",
        detail={"name": new.name, "role": new.role.value},
        ip=_ip(request),
    )
    return ApiKeyCreated(id=new.id, name=new.name, role=new.role, key=new.key)


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke a key")
def revoke_key(
    key_id: Id,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> None:
    who.require(Permission.MANAGE_KEYS)
    if not apikeys.revoke(conn, runtime.clock, who.tenant_id, key_id):
        raise NotFound("No such active API key", "找不到该 API 密钥")
    audit.record(
        conn,
        runtime.clock,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="apikey.revoke",
        target=f"apikey:{key_id}",
        ip=_ip(request),
    )


@router.get("/users", response_model=list[UserOut], summary="The tenant's users")
def list_users(who: Principal = Depends(get_principal), conn: Connection = CONN) -> list[UserOut]:
    who.require(Permission.MANAGE_USERS)
    return [UserOut(**u.__dict__) for u in service.list_users(conn, who.tenant_id)]


@router.post(
    "/users", response_model=UserOut, status_code=201, summary="Add a user", responses=errors(409)
)
def create_user(
    body: UserIn,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> UserOut:
    who.require(Permission.MANAGE_USERS)
    user = service.create_user(
        conn,
        runtime.clock,
        runtime.keyring,
        tenant_id=who.tenant_id,
        email=body.email,
        name=body.name,
        role=body.role,
        password=body.password,
        locale=body.locale,
    )
    audit.record(
        conn,
        runtime.clock,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="user.create",
        target=f"user:{user.id}",
        detail={"role": user.role.value},
        ip=_ip(request),
    )
    return UserOut(id=user.id, email=user.email, name=user.name, role=user.role, locale=user.locale)


@router.get("/audit", response_model=list[AuditEntry], summary="The tenant's audit log")
def audit_log(
    limit: int = 50,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> list[AuditEntry]:
    who.require(Permission.READ_AUDIT)
    limit = max(1, min(limit, 500))
    return [AuditEntry(**row) for row in audit.recent(conn, who.tenant_id, limit)]

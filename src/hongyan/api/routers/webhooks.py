"""Webhook endpoints and their delivery log. Owner only (``manage_webhooks``): an endpoint
receives replies with the sender's full number and its secret signs what we send."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import BigInt, Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.db.types import MAX_BIG_ID
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission
from hongyan.webhooks import service
from hongyan.webhooks.policy import EVENTS_ALLOWED

router = api_router("webhooks")

EVENTS_DOC = "Event types: " + ", ".join(EVENTS_ALLOWED) + " (* = every type)"


class WebhookIn(BaseModel):
    url: str = Field(max_length=500, description="https:// (http:// allowed outside production)")
    events: list[str] = Field(
        default_factory=lambda: list(service.DEFAULT_EVENTS), max_length=10, description=EVENTS_DOC
    )
    description: str = Field(default="", max_length=200)


class WebhookPatch(BaseModel):
    url: str | None = Field(default=None, max_length=500)
    events: list[str] | None = Field(default=None, max_length=10, description=EVENTS_DOC)
    active: bool | None = None
    description: str | None = Field(default=None, max_length=200)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signing secret; shown once, store it now")


class SecretOut(BaseModel):
    id: int
    secret: str = Field(description="The new signing secret; shown once, effective at once")


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event: str
    state: str = Field(description="pending, sending, delivered or dead")
    attempts: int
    next_at: datetime | None = Field(description="When the next attempt is due, if any")
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    attempt_log: list[AttemptOut] = Field(description="Every attempt, newest first")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as ?before= for the next, older page")


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _policy(runtime: Runtime) -> service.UrlPolicy:
    return service.UrlPolicy.from_settings(runtime.settings)


@router.post(
    "/webhooks",
    response_model=WebhookCreated,
    status_code=201,
    summary="Add an endpoint",
    responses=errors(409),
)
def create(
    body: WebhookIn,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> WebhookCreated:
    who.require(Permission.MANAGE_WEBHOOKS)
    made = service.create(
        conn,
        runtime.clock,
        runtime.keyring,
        _policy(runtime),
        who.tenant_id,
        url=body.url,
        events=body.events,
        description=body.description,
        actor=who.actor,
        ip=_ip(request),
    )
    return WebhookCreated(**made.endpoint, secret=made.secret)


@router.get("/webhooks", response_model=list[WebhookOut], summary="The tenant's endpoints")
def listing(who: Principal = Depends(get_principal), conn: Connection = CONN) -> list[WebhookOut]:
    who.require(Permission.MANAGE_WEBHOOKS)
    return [WebhookOut(**e) for e in service.listing(conn, who.tenant_id)]


@router.get("/webhooks/{endpoint_id}", response_model=WebhookOut, summary="One endpoint")
def show(
    endpoint_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> WebhookOut:
    who.require(Permission.MANAGE_WEBHOOKS)
    return WebhookOut(**service.get(conn, who.tenant_id, endpoint_id))


@router.patch("/webhooks/{endpoint_id}", response_model=WebhookOut, summary="Change an endpoint")
def change(
    endpoint_id: Id,
    body: WebhookPatch,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> WebhookOut:
    who.require(Permission.MANAGE_WEBHOOKS)
    updated = service.update(
        conn,
        runtime.clock,
        _policy(runtime),
        who.tenant_id,
        endpoint_id,
        url=body.url,
        events=body.events,
        active=body.active,
        description=body.description,
        actor=who.actor,
        ip=_ip(request),
    )
    return WebhookOut(**updated)


@router.delete("/webhooks/{endpoint_id}", status_code=204, summary="Remove an endpoint")
def remove(
    endpoint_id: Id,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> None:
    who.require(Permission.MANAGE_WEBHOOKS)
    service.delete(
        conn, runtime.clock, who.tenant_id, endpoint_id, actor=who.actor, ip=_ip(request)
    )


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    response_model=SecretOut,
    summary="Replace the signing secret",
)
def rotate_secret(
    endpoint_id: Id,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> SecretOut:
    who.require(Permission.MANAGE_WEBHOOKS)
    secret = service.rotate_secret(
        conn,
        runtime.clock,
        runtime.keyring,
        who.tenant_id,
        endpoint_id,
        actor=who.actor,
        ip=_ip(request),
    )
    return SecretOut(id=endpoint_id, secret=secret)


@router.post(
    "/webhooks/{endpoint_id}/test",
    response_model=DeliveryOut,
    status_code=202,
    summary="Queue a webhook.test event for this endpoint",
    responses=errors(409),
)
def send_test(
    endpoint_id: Id,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> DeliveryOut:
    who.require(Permission.MANAGE_WEBHOOKS)
    queued = service.send_test(
        conn, runtime.clock, who.tenant_id, endpoint_id, actor=who.actor, ip=_ip(request)
    )
    return DeliveryOut(**queued)


@router.get(
    "/webhooks/{endpoint_id}/deliveries",
    response_model=DeliveryPage,
    summary="An endpoint's deliveries with their attempts, newest first",
)
def deliveries(
    endpoint_id: Id,
    limit: int = Query(default=20, ge=1, le=100),
    before: int | None = Query(
        default=None, ge=1, le=MAX_BIG_ID, description="Only deliveries older than id"
    ),
    state: str | None = Query(default=None, pattern="^(pending|sending|delivered|dead)$"),
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> DeliveryPage:
    who.require(Permission.MANAGE_WEBHOOKS)
    page = service.deliveries(
        conn, who.tenant_id, endpoint_id, limit=limit, before=before, state=state
    )
    return DeliveryPage(items=[DeliveryOut(**i) for i in page.items], next_before=page.next_before)


@router.post(
    "/webhooks/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    summary="Send a dead delivery again",
    responses=errors(409),
)
def redeliver(
    delivery_id: BigInt,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> DeliveryOut:
    who.require(Permission.MANAGE_WEBHOOKS)
    again = service.redeliver(
        conn, runtime.clock, who.tenant_id, delivery_id, actor=who.actor, ip=_ip(request)
    )
    return DeliveryOut(**again)

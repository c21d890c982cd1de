"""Transactional sends: one message in, an id back; the dispatcher takes it from the outbox."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.content.placeholders import render
from hongyan.dispatch import outbox
from hongyan.dispatch.states import lane_for
from hongyan.errors import ValidationFailed
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission
from hongyan.tenants import service

router = APIRouter(tags=["messages"])


class MessageIn(BaseModel):
    to: str = Field(description="E.164 number, e.g. +8613812345678", max_length=20)
    text: str | None = Field(default=None, min_length=1, max_length=2000)
    template: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="Instead of text: a text with {name} placeholders, filled from params",
    )
    params: dict[str, str | int | float] = Field(default_factory=dict)
    category: str = Field(default="notification", pattern="^(verification|notification|marketing)$")
    idempotency_key: str | None = Field(default=None, max_length=100)
    send_at: datetime | None = Field(default=None, description="Timezone-aware; default now")


class MessageAccepted(BaseModel):
    id: int
    state: str
    created: bool = Field(description="False when the idempotency key matched an earlier request")


class MessageOut(BaseModel):
    id: int
    to: str = Field(description="Masked number")
    text: str
    category: str
    source: str
    state: str
    encoding: str
    parts: int
    attempts: int
    reason: str | None
    carrier_code: str | None
    channel: str | None
    due_at: datetime
    expires_at: datetime
    created_at: datetime
    submitted_at: datetime | None
    done_at: datetime | None


@router.post(
    "/messages", response_model=MessageAccepted, status_code=202, summary="Queue one message"
)
def send(
    body: MessageIn,
    idempotency_header: str | None = Header(default=None, alias="Idempotency-Key", max_length=100),
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> MessageAccepted:
    who.require(Permission.SEND)
    if body.send_at is not None and body.send_at.tzinfo is None:
        raise ValidationFailed("send_at needs a time zone offset", "send_at 需要带时区")
    if (body.text is None) == (body.template is None):
        raise ValidationFailed(
            "Send either text or template (with params)", "请提供 text 或 template（及 params）之一"
        )
    if body.text is not None and body.params:
        raise ValidationFailed("params need a template", "params 只能与 template 一起使用")
    text = body.text if body.text is not None else render(body.template or "", body.params)
    policy = service.policy_of(conn, who.tenant_id)
    new = outbox.NewMessage(
        to=body.to.strip(),
        text=text,
        lane=lane_for(body.category),
        source="api",
        idempotency_key=body.idempotency_key or idempotency_header,
        due_at=body.send_at,
    )
    mid, created = outbox.enqueue(
        conn, runtime.clock, runtime.keyring, who.tenant_id, new, max_parts=policy["max_parts"]
    )
    state = outbox.get(conn, who.tenant_id, mid)["state"]
    return MessageAccepted(id=mid, state=state, created=created)


@router.get("/messages/{message_id}", response_model=MessageOut, summary="One message")
def show(
    message_id: int,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> MessageOut:
    who.require(Permission.READ_REPORTS)
    m = outbox.get(conn, who.tenant_id, message_id)
    return MessageOut(
        to=m["dest_masked"],
        text=m["body"],
        **{k: m[k] for k in MessageOut.model_fields if k not in ("to", "text")},
    )

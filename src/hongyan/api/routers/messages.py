"""Transactional sends: one message in, an id back; the dispatcher takes it from the outbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Header, Query
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import BigInt, Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.content import sending
from hongyan.content.placeholders import render
from hongyan.dispatch import outbox
from hongyan.dispatch.states import lane_for
from hongyan.errors import ValidationFailed
from hongyan.reports import messages as reports
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission
from hongyan.tenants import service

router = api_router("messages")

#: When a message may be scheduled: a past time sends it now.
SEND_AT_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, tzinfo=UTC))


class MessageIn(BaseModel):
    to: str = Field(description="E.164 number, e.g. +8613812345678", max_length=20)
    text: str | None = Field(default=None, min_length=1, max_length=2000)
    template: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="Instead of text: a text with {name} placeholders, filled from params "
        "(verification and notification only)",
    )
    template_id: Id | None = Field(
        default=None,
        description="Instead of text: a stored template, sent with its approved version and "
        "filled from params. Marketing is sent this way only.",
    )
    params: dict[str, str | int | float] = Field(default_factory=dict)
    category: str | None = Field(
        default=None,
        pattern="^(verification|notification|marketing)$",
        description="Default: the template's category with template_id, else notification",
    )
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
    "/messages",
    response_model=MessageAccepted,
    status_code=202,
    summary="Queue one message",
    responses=errors(404, 409),
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
    if body.send_at is not None and not SEND_AT_RANGE[0] <= body.send_at <= SEND_AT_RANGE[1]:
        # Year 1 at +14:00 is before the first instant in UTC, and a validity past year 9999
        # cannot be stored: both were an OverflowError, a 500.
        raise ValidationFailed(
            "send_at must lie between the years 1970 and 9998", "send_at 须在 1970–9998 年之间"
        )
    given = [x for x in (body.text, body.template, body.template_id) if x is not None]
    if len(given) != 1:
        raise ValidationFailed(
            "Send one of text, template (with params) or template_id (with params)",
            "请提供 text、template（及 params）或 template_id（及 params）中的一项",
        )
    if body.text is not None and body.params:
        raise ValidationFailed("params need a template", "params 只能与 template 一起使用")
    policy = service.policy_of(conn, who.tenant_id)
    version_id: int | None = None
    if body.template_id is not None:
        stored = sending.sendable(conn, who.tenant_id, body.template_id)
        if body.category is not None and body.category != stored.category:
            raise ValidationFailed(
                f"Template {stored.template_id} is a {stored.category} template",
                f"模板 {stored.template_id} 属于 {stored.category} 类",
            )
        category = stored.category
        text = sending.render(
            conn, who.tenant_id, stored, body.params, max_parts=policy["max_parts"]
        ).text
        version_id = stored.version_id
    else:
        category = body.category or "notification"
        text = body.text if body.text is not None else render(body.template or "", body.params)
    new = outbox.NewMessage(
        to=body.to.strip(),
        text=text,
        lane=lane_for(category),
        source="api",
        idempotency_key=body.idempotency_key or idempotency_header,
        due_at=body.send_at,
        template_version_id=version_id,
    )
    mid, created = outbox.enqueue(
        conn, runtime.clock, runtime.keyring, who.tenant_id, new, max_parts=policy["max_parts"]
    )
    state = outbox.get(conn, who.tenant_id, mid)["state"]
    return MessageAccepted(id=mid, state=state, created=created)


@router.get("/messages/{message_id}", response_model=MessageOut, summary="One message")
def show(
    message_id: BigInt,
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


# -- read side: lists, a message's timeline, the inbox (hongyan.reports.messages) --------------


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int = Field(description="Messages matching the filter, over all pages")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")


class TimelineEvent(BaseModel):
    kind: str = Field(description="created, due, claimed, retry, submitted, receipt, final, reply")
    at: datetime | None = Field(description="Null when the time was not recorded")
    detail: dict[str, Any]


class TimelineOut(BaseModel):
    message: MessageOut
    events: list[TimelineEvent]


class InboundOut(BaseModel):
    id: int
    number: str = Field(description="Masked number of the sender")
    destination: str
    text: str
    kind: str = Field(description="reply or opt_out")
    channel: str
    message_id: int | None = Field(description="The message this replies to, if known")
    received_at: datetime


class InboxPage(BaseModel):
    items: list[InboundOut]
    total: int
    next_cursor: str | None


API_FIELDS = {"number": "last_digits"}


def _api_problem(exc: reports.BadFilter) -> reports.BadFilter:
    """The same problems, named by the query parameters the API takes."""
    return reports.BadFilter(
        [replace(p, field=API_FIELDS.get(p.field, p.field)) for p in exc.problems]
    )


def _message_out(m: dict[str, Any]) -> MessageOut:
    rest = {k: m[k] for k in MessageOut.model_fields if k not in ("to", "text")}
    return MessageOut(to=m["dest_masked"], text=m["body"], **rest)


def _inbound_out(x: dict[str, Any]) -> InboundOut:
    rest = {k: x[k] for k in InboundOut.model_fields if k != "number"}
    return InboundOut(number=x["phone_masked"], **rest)


LAST_DIGITS = Query(
    default=None,
    max_length=24,
    description="1-4 trailing digits, or a whole number (E.164) for an exact match",
)
LIMIT = Query(default=50, ge=1, le=reports.MAX_LIMIT)
CURSOR = Query(default=None, max_length=200, description="next_cursor of the previous page")


@router.get("/messages", response_model=MessagePage, summary="List messages, newest first")
def list_messages(
    state: list[str] = Query(default=[], description="One or several, repeated or a,b"),
    category: str | None = Query(default=None, max_length=20),
    source: str | None = Query(default=None, max_length=20),
    since: str | None = Query(
        default=None,
        max_length=40,
        description="Created at or after (ISO 8601; no offset: the tenant's time zone)",
    ),
    until: str | None = Query(
        default=None,
        max_length=40,
        description="Created before; a bare date counts the whole day",
    ),
    last_digits: str | None = LAST_DIGITS,
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> MessagePage:
    who.require(Permission.READ_REPORTS)
    tz = ZoneInfo(service.get_tenant_by_id(conn, who.tenant_id).timezone)
    try:
        flt = reports.message_filter(
            tz,
            states=state,
            category=category,
            source=source,
            since=since,
            until=until,
            number=last_digits,
        )
        page = reports.list_messages(
            conn, runtime.keyring, who.tenant_id, flt, limit=limit, cursor=cursor
        )
    except reports.BadFilter as exc:
        raise _api_problem(exc) from None
    return MessagePage(
        items=[_message_out(m) for m in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/messages/{message_id}/timeline",
    response_model=TimelineOut,
    summary="A message's life: submits, receipts, final state, replies",
)
def timeline(
    message_id: BigInt,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> TimelineOut:
    who.require(Permission.READ_REPORTS)
    tl = reports.message_timeline(conn, who.tenant_id, message_id)
    return TimelineOut(
        message=_message_out(tl.message),
        events=[TimelineEvent(kind=e.kind, at=e.at, detail=e.detail) for e in tl.events],
    )


@router.get("/inbox", response_model=InboxPage, summary="Replies and opt-outs", tags=["inbox"])
def inbox(
    kind: str | None = Query(default=None, max_length=20, description="reply or opt_out"),
    last_digits: str | None = LAST_DIGITS,
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> InboxPage:
    who.require(Permission.READ_REPORTS)
    try:
        flt = reports.inbox_filter(kind=kind, number=last_digits)
        page = reports.list_inbox(
            conn, runtime.keyring, who.tenant_id, flt, limit=limit, cursor=cursor
        )
    except reports.BadFilter as exc:
        raise _api_problem(exc) from None
    return InboxPage(
        items=[_inbound_out(x) for x in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )

"""The platform's review queue for staff: pending signatures and templates, and decisions.

Authenticated as platform staff only: a staff API key (``Authorization: Bearer hys_…``) or a
staff console session (cookie ``hongyan_staff_session``, with ``X-CSRF-Token`` on writes). A
tenant's key or session is refused here, and a staff key is refused by the tenant routes.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, bearer_key, get_runtime
from hongyan.api.params import Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.content import review
from hongyan.errors import AuthenticationFailed, PermissionDenied
from hongyan.runtime import Runtime
from hongyan.staff import service as staff
from hongyan.staff.service import StaffPrincipal

STAFF_COOKIE = "hongyan_staff_session"
router = api_router("review")


def get_staff(
    request: Request, conn: Connection = CONN, runtime: Runtime = Depends(get_runtime)
) -> StaffPrincipal:
    key = bearer_key(request)
    if key:
        if not staff.is_staff_key(key):
            raise PermissionDenied(
                "The review queue is for platform staff", "审核队列仅供平台审核人员使用"
            )
        return staff.authenticate_key(conn, runtime.clock, key)
    token = request.cookies.get(STAFF_COOKIE)
    if token:
        who = staff.resolve_session(conn, runtime.clock, token)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get("x-csrf-token", "")
            if not sent or not secrets.compare_digest(sent, who.csrf_token):
                raise PermissionDenied("Missing or wrong CSRF token", "CSRF 校验失败")
        return who
    raise AuthenticationFailed(
        "Send a staff API key (Authorization: Bearer hys_…) or log in at /staff/login",
        "请提供平台人员 API 密钥（Authorization: Bearer hys_…）或在 /staff/login 登录",
    )


class QueueItem(BaseModel):
    kind: str = Field(description="signature or template")
    id: int = Field(description="The signature's id, or the template version's id")
    tenant: str
    tenant_name: str
    submitted_at: datetime
    text: str | None = Field(default=None, description="A signature's text")
    note: str | None = None
    template_id: int | None = None
    name: str | None = None
    category: str | None = None
    version: int | None = None
    body: str | None = None
    link_url: str | None = None
    findings: list[dict[str, Any]] | None = Field(default=None, description="Lint at submit")


class DecisionIn(BaseModel):
    reason: str | None = Field(default=None, max_length=300)


class DecisionOut(BaseModel):
    kind: str
    id: int
    status: str
    reason: str | None
    template_id: int | None = None
    version: int | None = None


class RecentItem(BaseModel):
    kind: str
    id: int
    subject: str
    status: str
    reason: str | None
    reviewed_at: datetime
    reviewed_by: str | None
    tenant: str


KIND = Path(pattern="^(signature|template)$")


@router.get("/review/queue", response_model=list[QueueItem], summary="What waits for review")
def queue(
    kind: str | None = Query(default=None, pattern="^(signature|template)$"),
    who: StaffPrincipal = Depends(get_staff),
    conn: Connection = CONN,
) -> Any:
    who.require_reviewer()
    return review.queue(conn, kind=kind)  # type: ignore[arg-type]


@router.get("/review/recent", response_model=list[RecentItem], summary="The latest decisions")
def recent(who: StaffPrincipal = Depends(get_staff), conn: Connection = CONN) -> Any:
    who.require_reviewer()
    return review.recent(conn)


@router.post(
    "/review/{kind}/{item_id}/approve",
    response_model=DecisionOut,
    summary="Approve",
    responses=errors(409),
)
def approve(
    item_id: Id,
    kind: str = KIND,
    who: StaffPrincipal = Depends(get_staff),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    return review.decide(conn, runtime.clock, who, kind, item_id, approve=True)


@router.post(
    "/review/{kind}/{item_id}/reject",
    response_model=DecisionOut,
    summary="Reject with a reason",
    responses=errors(409),
)
def reject(
    item_id: Id,
    body: DecisionIn,
    kind: str = KIND,
    who: StaffPrincipal = Depends(get_staff),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    return review.decide(conn, runtime.clock, who, kind, item_id, approve=False, reason=body.reason)

"""The suppression list through the API: read it, block a number, lift a manual block."""

from __future__ import annotations

from datetime import datetime

from fastapi import Depends
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import Id
from hongyan.api.routing import api_router
from hongyan.contacts import suppression
from hongyan.dispatch.outbox import E164, InvalidNumber
from hongyan.errors import NotFound
from hongyan.runtime import Runtime
from hongyan.security.keyring import mask_phone
from hongyan.security.roles import Permission

router = api_router("suppressions")


class SuppressionIn(BaseModel):
    to: str = Field(description="E.164 number", max_length=20)
    reason: str = Field(
        default="manual",
        pattern="^(manual|complaint|opt_out)$",
        description="manual blocks everything; complaint and opt_out block marketing",
    )
    detail: str | None = Field(default=None, max_length=200)


class SuppressionOut(BaseModel):
    id: int
    to: str = Field(description="Masked number")
    reason: str
    scope: str
    source: str
    detail: str | None
    created_at: datetime
    expires_at: datetime | None


def _out(row: dict[str, object]) -> SuppressionOut:
    return SuppressionOut(to=str(row["phone_masked"]), **row)  # type: ignore[arg-type]


@router.get("/suppressions", response_model=list[SuppressionOut], summary="The suppression list")
def list_suppressions(
    limit: int = 100, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> list[SuppressionOut]:
    who.require(Permission.READ_CONTACTS)
    rows = suppression.list_for(conn, who.tenant_id, limit=max(1, min(limit, 1000)))
    return [_out(r) for r in rows]


@router.post("/suppressions", status_code=201, summary="Suppress a number")
def add_suppression(
    body: SuppressionIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, object]:
    who.require(Permission.MANAGE_CONTACTS)
    to = body.to.strip()
    if not E164.match(to):
        raise InvalidNumber()
    item = suppression.NewSuppression(who.tenant_id, to, body.reason, "api", body.detail)
    added = suppression.block(conn, runtime.clock, runtime.keyring, item, who.actor)
    return {"to": mask_phone(to), "reason": body.reason, "added": added}


@router.delete("/suppressions/{suppression_id}", status_code=204, summary="Lift a manual block")
def remove_suppression(
    suppression_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> None:
    """Only ``manual`` blocks can be lifted: an opt-out is the recipient's, not ours, to undo."""
    who.require(Permission.MANAGE_CONTACTS)
    if not suppression.remove_manual(conn, who.tenant_id, suppression_id):
        raise NotFound(
            "No manual block with this id", "找不到该手动屏蔽记录（退订与空号不能在此解除）"
        )

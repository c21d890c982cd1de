"""The marketing calendar: a year's occasions and the suggested send dates around them."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Query
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.routing import api_router
from hongyan.campaigns.calendar import upcoming
from hongyan.campaigns.calendar_data import marketing_calendar
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants

router = api_router("calendar")


@router.get(
    "/calendar/upcoming",
    summary="Suggested send dates coming up (pre-sale, urgency, follow-up)",
)
def calendar_upcoming(
    days: int = Query(60, ge=1, le=366),
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    zone = ZoneInfo(tenants.get_tenant_by_id(conn, who.tenant_id).timezone)
    today = runtime.clock.now().astimezone(zone).date()  # the tenant's today
    found = upcoming(marketing_calendar(conn), today, days)
    return {"today": today.isoformat(), "suggestions": [s.as_dict() for s in found]}


@router.get(
    "/calendar/{year}",
    summary="A year's holidays (when announced), solar terms, festivals and shopping days",
)
def calendar_year(
    year: int, _who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    return marketing_calendar(conn).year(year)

"""Reports through the API: a campaign's funnel, delivery analysis and ROI (``read_reports``),
as JSON or exported as CSV / XLSX."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal
from hongyan.reports import campaigns, export
from hongyan.security.roles import Permission
from hongyan.tenants import service as tenants

router = APIRouter(tags=["reports"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _report(
    conn: Connection, who: Principal, campaign_id: int, places: bool = True
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    tz = tenants.get_tenant_by_id(conn, who.tenant_id).timezone
    return campaigns.campaign_report(conn, who.tenant_id, campaign_id, timezone=tz, places=places)


@router.get("/reports/campaigns/{campaign_id}")
def campaign_report(
    campaign_id: int,
    places: bool = True,
    conn: Connection = CONN,
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Funnel (planned → sent → delivered → clicked → converted), failure reasons, provinces,
    cities, carriers, clicks by hour, cost and ROI; per variant too. ``places=false`` leaves
    out provinces and cities (the costly part for a large campaign)."""
    return _report(conn, who, campaign_id, places)


@router.get("/reports/campaigns/{campaign_id}/export.csv")
def campaign_report_csv(
    campaign_id: int, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    body = export.to_csv(_report(conn, who, campaign_id))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
    )


@router.get("/reports/campaigns/{campaign_id}/export.xlsx")
def campaign_report_xlsx(
    campaign_id: int, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    body = export.to_xlsx(_report(conn, who, campaign_id))
    return Response(
        body,
        media_type=XLSX,
        headers={"content-disposition": f'attachment; filename="campaign-{campaign_id}.xlsx"'},
    )

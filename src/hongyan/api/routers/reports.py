"""Reports through the API (``read_reports``): a campaign's, a journey's or a segment's funnel,
delivery analysis and ROI, as JSON or exported as CSV / XLSX."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends
from fastapi.responses import Response
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal
from hongyan.api.params import Id
from hongyan.api.responses import CSV_FILE
from hongyan.api.routing import api_router
from hongyan.errors import NotFound
from hongyan.reports import campaigns, export, journeys, segments
from hongyan.security.roles import Permission
from hongyan.tenants import service as tenants

router = api_router("reports")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_CSV_BODY = {"text/csv": {"schema": {"type": "string"}}}
_XLSX_BODY = {XLSX: {"schema": {"type": "string", "format": "binary"}}}
# The exports' 200, documented as the files they are (not the JSON FastAPI assumes).
XLSX_FILE: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Excel workbook", "content": _XLSX_BODY}
}
EITHER_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "CSV or an Excel workbook, by the extension",
        "content": {**_CSV_BODY, **_XLSX_BODY},
    }
}
# What a report is of: its name in paths and files, and the function that makes it.
KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "campaign": campaigns.campaign_report,
    "journey": journeys.journey_report,
    "segment": segments.segment_report,
}


def _report(
    conn: Connection, who: Principal, kind: str, ref: int, places: bool = True
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    tz = tenants.get_tenant_by_id(conn, who.tenant_id).timezone
    return KINDS[kind](conn, who.tenant_id, ref, timezone=tz, places=places)


def _file(rep: dict[str, Any], kind: str, ref: int, ext: str) -> Response:
    if ext == "xlsx":
        body, media = export.to_xlsx(rep), XLSX
    else:
        body, media = export.to_csv(rep), "text/csv; charset=utf-8"
    return Response(
        body,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{kind}-{ref}.{ext}"'},
    )


@router.get("/reports/campaigns/{campaign_id}")
def campaign_report(
    campaign_id: Id,
    places: bool = True,
    conn: Connection = CONN,
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """Funnel (planned → sent → delivered → clicked → converted), failure reasons, provinces,
    cities, carriers, clicks by hour, cost and ROI; per variant too. ``places=false`` leaves
    out provinces and cities."""
    return _report(conn, who, "campaign", campaign_id, places)


@router.get(
    "/reports/campaigns/{campaign_id}/export.csv",
    response_class=Response,
    responses=CSV_FILE,
)
def campaign_report_csv(
    campaign_id: Id, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    return _file(_report(conn, who, "campaign", campaign_id), "campaign", campaign_id, "csv")


@router.get(
    "/reports/campaigns/{campaign_id}/export.xlsx",
    response_class=Response,
    responses=XLSX_FILE,
)
def campaign_report_xlsx(
    campaign_id: Id, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    return _file(_report(conn, who, "campaign", campaign_id), "campaign", campaign_id, "xlsx")


@router.get("/reports/journeys/{journey_id}")
def journey_report(
    journey_id: Id,
    places: bool = True,
    conn: Connection = CONN,
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """A journey's funnel per send step (``variants`` s0, s2 …, named in ``steps`` with each
    step's link target and coupon pool), failure reasons, places, clicks on its steps' links
    (people and bots apart), conversions and revenue by coupon or last click, cost, and its
    enrolments by state and outcome."""
    return _report(conn, who, "journey", journey_id, places)


@router.get(
    "/reports/journeys/{journey_id}/export.{ext}", response_class=Response, responses=EITHER_FILE
)
def journey_report_file(
    journey_id: Id, ext: str, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    _check_ext(ext)
    return _file(_report(conn, who, "journey", journey_id), "journey", journey_id, ext)


@router.get("/reports/segments/{segment_id}")
def segment_report(
    segment_id: Id,
    places: bool = True,
    conn: Connection = CONN,
    who: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """The funnel across the campaigns whose audience is the segment, per campaign
    (``campaigns``), with failure reasons, places, clicks by hour of day, cost and ROI."""
    return _report(conn, who, "segment", segment_id, places)


@router.get(
    "/reports/segments/{segment_id}/export.{ext}", response_class=Response, responses=EITHER_FILE
)
def segment_report_file(
    segment_id: Id, ext: str, conn: Connection = CONN, who: Principal = Depends(get_principal)
) -> Response:
    _check_ext(ext)
    return _file(_report(conn, who, "segment", segment_id), "segment", segment_id, ext)


def _check_ext(ext: str) -> None:
    if ext not in ("csv", "xlsx"):
        raise NotFound("Exports are .csv or .xlsx", "导出格式为 .csv 或 .xlsx")

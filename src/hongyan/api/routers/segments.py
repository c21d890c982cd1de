"""Audiences through the API: segments (rules, preview, export, snapshot), frozen audiences,
RFM and lifecycle views, the tenant's audience settings and stores.

Reading (schema, segments, previews, RFM, lifecycle, audiences) needs ``read_contacts``;
changing anything, exporting and snapshotting need ``manage_contacts``. Numbers and names are
always masked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import Id
from hongyan.api.responses import CSV_FILE, errors
from hongyan.api.routing import api_router
from hongyan.audience import recompute, scoring, segments, service
from hongyan.audience.scoring import Splits, Thresholds
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission

router = api_router("audiences")

RULE_DOC = (
    'A rule tree: {"all": [...]}, {"any": [...]}, {"not": {...}} or a condition '
    '{"field": "...", "op": "...", "value": ...}; GET /segments/schema lists fields and operators.'
)


class SegmentIn(BaseModel):
    name: str = Field(max_length=100)
    rule: Any = Field(description=RULE_DOC)
    description: str = Field(default="", max_length=500)


class SegmentPatch(BaseModel):
    name: str | None = Field(default=None, max_length=100)
    rule: Any = Field(default=None, description=RULE_DOC)
    description: str | None = Field(default=None, max_length=500)


class SegmentOut(BaseModel):
    id: int
    name: str
    description: str
    rule: Any
    created_by: str
    created_at: datetime
    updated_at: datetime


class PreviewIn(BaseModel):
    rule: Any = Field(description=RULE_DOC)
    sample: int = Field(default=20, ge=0, le=100)
    reach: str | None = Field(
        default=None,
        pattern="^(marketing|notification)$",
        description="Also count who a snapshot for this purpose would exclude, and why",
    )


class SnapshotIn(BaseModel):
    purpose: str = Field(default="marketing", pattern="^(marketing|notification)$")
    name: str | None = Field(default=None, max_length=100)
    campaign_ref: str | None = Field(default=None, max_length=64)


class SettingsIn(BaseModel):
    new_days: int | None = Field(default=None, ge=1, le=3650)
    active_days: int | None = Field(default=None, ge=1, le=3650)
    dormant_days: int | None = Field(default=None, ge=1, le=3650)
    lost_days: int | None = Field(default=None, ge=1, le=3650)
    r_split: float | None = Field(default=None, ge=1, le=5)
    f_split: float | None = Field(default=None, ge=1, le=5)
    m_split: float | None = Field(default=None, ge=1, le=5)
    splits_mean: bool = Field(
        default=False, description="Reset every RFM split to the buyers' mean score"
    )
    location_attribute: str | None = Field(default=None, max_length=40)
    clear_location_attribute: bool = False
    recompute_hours: int | None = Field(default=None, ge=1, le=744)


class StoreIn(BaseModel):
    name: str = Field(max_length=100)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    address: str = Field(default="", max_length=200)


def _seg(row: dict[str, Any]) -> SegmentOut:
    return SegmentOut(**row)


@router.get("/segments/schema", summary="Fields and operators a rule may use")
def schema(who: Principal = Depends(get_principal), conn: Connection = CONN) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    s = service.load_schema(conn, who.tenant_id)
    return {
        "fields": s.describe(),
        "segments": [{"id": i, "name": n} for i, (n, _r) in s.segments.items()],
        "stores": [{"id": st.id, "name": st.name} for st in s.stores.values()],
    }


@router.get("/segments", response_model=list[SegmentOut], summary="Saved segments")
def list_segments(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> list[SegmentOut]:
    who.require(Permission.READ_CONTACTS)
    return [_seg(r) for r in segments.list_segments(conn, who.tenant_id)]


@router.post(
    "/segments",
    response_model=SegmentOut,
    status_code=201,
    summary="Save a segment",
    responses=errors(409),
)
def create_segment(
    body: SegmentIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> SegmentOut:
    who.require(Permission.MANAGE_CONTACTS)
    return _seg(
        segments.create(
            conn, runtime.clock, who.tenant_id, name=body.name, rule=body.rule,
            description=body.description, actor=who.actor,
        )
    )  # fmt: skip


@router.post("/segments/preview", summary="Count and a masked sample of a rule, now")
def preview_rule(
    body: PreviewIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return segments.preview(
        conn, runtime.clock, who.tenant_id, body.rule, sample=body.sample, reach=body.reach
    )


@router.get("/segments/{segment_id}", response_model=SegmentOut)
def get_segment(
    segment_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> SegmentOut:
    who.require(Permission.READ_CONTACTS)
    return _seg(segments.get(conn, who.tenant_id, segment_id))


@router.put(
    "/segments/{segment_id}",
    response_model=SegmentOut,
    summary="Change a segment",
    responses=errors(409),
)
def update_segment(
    segment_id: Id,
    body: SegmentPatch,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> SegmentOut:
    who.require(Permission.MANAGE_CONTACTS)
    return _seg(
        segments.update(
            conn, runtime.clock, who.tenant_id, segment_id, name=body.name, rule=body.rule,
            description=body.description, actor=who.actor,
        )
    )  # fmt: skip


@router.delete("/segments/{segment_id}", status_code=204, responses=errors(409))
def delete_segment(
    segment_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> None:
    who.require(Permission.MANAGE_CONTACTS)
    segments.delete(conn, runtime.clock, who.tenant_id, segment_id, actor=who.actor)


@router.get("/segments/{segment_id}/preview", summary="Count and a masked sample, now")
def preview_segment(
    segment_id: Id,
    sample: int = Query(default=20, ge=0, le=100),
    reach: str | None = Query(default=None, pattern="^(marketing|notification)$"),
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    body = PreviewIn(
        rule=segments.rule_of(conn, who.tenant_id, segment_id), sample=sample, reach=reach
    )
    return segments.preview(
        conn, runtime.clock, who.tenant_id, body.rule, sample=body.sample, reach=body.reach
    )


@router.get(
    "/segments/{segment_id}/export.csv",
    summary="Every member as CSV (masked)",
    response_class=StreamingResponse,
    responses=CSV_FILE,
)
def export_segment(
    segment_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> StreamingResponse:
    who.require(Permission.MANAGE_CONTACTS)
    seg = segments.start_export(conn, runtime.clock, who.tenant_id, segment_id, actor=who.actor)
    return StreamingResponse(
        segments.csv_chunks(runtime.engine, runtime.clock, who.tenant_id, seg["rule"]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"'},
    )


@router.post("/segments/{segment_id}/snapshot", status_code=201, summary="Freeze into an audience")
def snapshot(
    segment_id: Id,
    body: SnapshotIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Every contact the segment matches now, with its verdict: included, or excluded as
    suppressed or without consent for the purpose; ``counts`` says how many of each."""
    who.require(Permission.MANAGE_CONTACTS)
    return segments.snapshot(
        conn, runtime.clock, who.tenant_id, segment=segment_id, purpose=body.purpose,
        name=body.name, campaign_ref=body.campaign_ref, actor=who.actor,
    )  # fmt: skip


@router.get("/audiences", summary="Frozen audiences, newest first")
def list_audiences(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> list[dict[str, Any]]:
    who.require(Permission.READ_CONTACTS)
    return segments.list_audiences(conn, who.tenant_id)


@router.get("/audiences/{audience_id}")
def get_audience(
    audience_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return segments.get_audience(conn, who.tenant_id, audience_id)


@router.get("/rfm", summary="RFM: groups, scores, the R × F grid")
def rfm(who: Principal = Depends(get_principal), conn: Connection = CONN) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    settings = service.get_settings(conn, who.tenant_id)
    return {
        "computed_at": settings.computed_at,
        **recompute.distribution(conn, who.tenant_id),
        "group_revenue": recompute.group_revenue(conn, who.tenant_id),
        "grid": recompute.grid(conn, who.tenant_id),
        "scores": recompute.score_counts(conn, who.tenant_id),
        "splits": settings.as_json()["rfm_splits"],
    }


@router.post("/rfm/recompute", summary="Recompute RFM, lifecycle and locations now")
def rfm_recompute(
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_CONTACTS)
    return recompute.recompute_in(conn, runtime.clock, who.tenant_id)


@router.get("/lifecycle", summary="Contacts per lifecycle stage, evaluated now")
def lifecycle(
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    counts = recompute.lifecycle_now(conn, runtime.clock, who.tenant_id)
    return {
        "at": runtime.clock.now(),
        "stages": counts,
        "funnel": [{"stage": s, "contacts": counts[s]} for s in scoring.FUNNEL],
        "thresholds": service.get_settings(conn, who.tenant_id).as_json()["lifecycle"],
    }


@router.get("/audience/settings")
def get_settings(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return service.get_settings(conn, who.tenant_id).as_json()


@router.put("/audience/settings", summary="Lifecycle thresholds, RFM splits, location attribute")
def put_settings(
    body: SettingsIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_CONTACTS)
    current = service.get_settings(conn, who.tenant_id)
    t = current.thresholds
    thresholds = Thresholds(
        body.new_days or t.new_days,
        body.active_days or t.active_days,
        body.dormant_days or t.dormant_days,
        body.lost_days or t.lost_days,
    )
    s = current.splits
    splits = (
        Splits()
        if body.splits_mean
        else Splits(body.r_split or s.r, body.f_split or s.f, body.m_split or s.m)
    )
    location: str | bool | None = False
    if body.clear_location_attribute:
        location = None
    elif body.location_attribute:
        location = body.location_attribute
    return service.update_settings(
        conn, runtime.clock, who.tenant_id, thresholds=thresholds, splits=splits,
        location_attribute=location, recompute_hours=body.recompute_hours,
    ).as_json()  # fmt: skip


@router.get("/stores")
def list_stores(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> list[dict[str, Any]]:
    who.require(Permission.READ_CONTACTS)
    return service.list_stores(conn, who.tenant_id)


@router.post(
    "/stores",
    status_code=201,
    summary="Add a store (coordinates or an address)",
    responses=errors(409),
)
def add_store(
    body: StoreIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_CONTACTS)
    return service.add_store(
        conn, runtime.clock, who.tenant_id, name=body.name, lat=body.lat, lon=body.lon,
        address=body.address,
    )  # fmt: skip


@router.delete("/stores/{store_id}", status_code=204)
def remove_store(
    store_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> None:
    who.require(Permission.MANAGE_CONTACTS)
    service.remove_store(conn, who.tenant_id, store_id)

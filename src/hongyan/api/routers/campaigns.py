"""Campaigns and frequency caps through the API.

Reading campaigns (list, one, status, estimate) needs ``read_reports``; creating, launching,
pausing, resuming, cancelling and deciding need ``send``; the frequency caps need
``manage_tenant`` to change."""

from __future__ import annotations

from typing import Any

from fastapi import BackgroundTasks, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.campaigns import caps, journeys, launching
from hongyan.campaigns import service as campaigns
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission

router = api_router("campaigns")


class VariantIn(BaseModel):
    template_id: Id | None = Field(default=None, description="The template's live version")
    template_version_id: Id | None = Field(default=None, description="Or a version")
    weight: int = Field(default=1, ge=1, le=1000)
    link_url: str | None = Field(
        default=None,
        description="Where {link} leads (http(s), at most 500 characters): needed when the "
        "template places {link}, refused when it does not",
    )
    coupon_pool_id: Id | None = Field(
        default=None,
        description="The tenant's pool {coupon} is drawn from: needed when the template places "
        "{coupon}, refused when it does not",
    )


class AbIn(BaseModel):
    share: float = Field(default=0.01, gt=0, le=0.5, description="Each variant's test share")
    metric: str = Field(default="delivery_rate")
    method: str = Field(default="frequentist", pattern="^(frequentist|bayesian)$")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    wait_hours: float = Field(default=4, gt=0, le=336)
    min_trials: int = Field(default=100, ge=1)


class CampaignIn(BaseModel):
    name: str = Field(max_length=100)
    segment: Id | str | None = Field(default=None, description="Segment id or name")
    phones: list[str] | None = Field(default=None, description="Or an uploaded list (E.164)")
    variants: list[VariantIn] = Field(min_length=1, max_length=5)
    category: str = Field(default="marketing", pattern="^(marketing|notification)$")
    important: bool = False
    route: str | None = Field(default=None, description="Channel whose price and rate apply")
    schedule: dict[str, Any] | None = Field(
        default=None,
        description='{"kind": "now"} | {"kind": "at", "at": "…"} | {"kind": "recurring", '
        '"every": "month", "day": 18, "time": "10:00"}',
    )
    window: Any = Field(default=None, description='A preset name or {"start","end","days"}')
    on_window_end: str = Field(default="carry", pattern="^(carry|expire)$")
    rate: float | None = Field(default=None, gt=0)
    ab: AbIn | None = None
    link_url: str | None = Field(
        default=None,
        description="Where {link} leads, for every variant whose template places {link} and "
        "that names no link_url of its own",
    )
    coupon_pool_id: Id | None = Field(
        default=None,
        description="The pool {coupon} is drawn from, for every variant whose template places "
        "{coupon} and that names no pool of its own",
    )


class DecideIn(BaseModel):
    winner: str | None = Field(default=None, description="Choose the winner (else the test)")


class CapsIn(BaseModel):
    limits: dict[str, list[int]] = Field(
        description='[messages, days] by lifecycle stage: {"new": [1, 7], "default": [3, 30]}'
    )


_ref = campaigns.id_or_name


@router.get("/campaigns", summary="The tenant's campaigns, newest first")
def list_campaigns(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return {"campaigns": campaigns.list_campaigns(conn, who.tenant_id)}


@router.post(
    "/campaigns", status_code=201, summary="Create a draft campaign", responses=errors(404, 409)
)
def create_campaign(
    body: CampaignIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return campaigns.create(
        conn, runtime.clock, runtime.keyring, who.tenant_id, name=body.name,
        variants=[v.model_dump() for v in body.variants], segment=body.segment,
        phones=body.phones, category=body.category, important=body.important, route=body.route,
        schedule=body.schedule, window=body.window, on_window_end=body.on_window_end,
        rate=body.rate, ab=body.ab.model_dump() if body.ab else None, link_url=body.link_url,
        coupon_pool_id=body.coupon_pool_id, actor=who.actor,
    )  # fmt: skip


@router.get("/campaigns/{ref}", summary="A campaign with its messages, funnel and cost")
def campaign_status(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return campaigns.status(conn, runtime.clock, who.tenant_id, _ref(ref))


@router.post("/campaigns/{ref}/estimate", summary="Recipients, parts and cost if launched now")
def estimate(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return campaigns.estimate(conn, runtime.clock, who.tenant_id, _ref(ref))


@router.post(
    "/campaigns/{ref}/launch", summary="Launch now, or schedule for its time", responses=errors(409)
)
def launch(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return campaigns.launch(
        conn, runtime.clock, runtime.keyring, who.tenant_id, _ref(ref), actor=who.actor
    )


@router.post("/campaigns/{ref}/pause", summary="Hold every planned message", responses=errors(409))
def pause(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return campaigns.pause(conn, runtime.clock, who.tenant_id, _ref(ref), actor=who.actor)


@router.post(
    "/campaigns/{ref}/resume", summary="Plan the held messages again", responses=errors(409)
)
def resume(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return campaigns.resume(conn, runtime.clock, who.tenant_id, _ref(ref), actor=who.actor)


@router.post(
    "/campaigns/{ref}/cancel", summary="Cancel every message not yet sent", responses=errors(409)
)
def cancel(
    ref: str,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return campaigns.cancel(conn, runtime.clock, who.tenant_id, _ref(ref), actor=who.actor)


@router.post(
    "/campaigns/{ref}/decide",
    status_code=202,
    summary="Decide an A/B test; the rest is sent the winner in the background",
    responses={
        200: {"description": "The test found no winner: the decision is recorded"},
        **errors(409),
    },
)
def decide(
    ref: str,
    body: DecideIn,
    response: Response,
    tasks: BackgroundTasks,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Records the decision and answers at once: 202 with the campaign ``deciding`` while the
    rest of the audience is materialised with the winner (follow it at ``GET
    /campaigns/{ref}``: back to ``running`` with the rest's counts, or, if it failed, the test
    waiting again with ``decision.error``); 200 when the test found no winner (nothing to send;
    the evidence is on the campaign). A decision already under way is 409."""
    who.require(Permission.SEND)
    camp = campaigns.begin_decide(
        conn, runtime.clock, who.tenant_id, _ref(ref), winner=body.winner, actor=who.actor
    )
    if camp["state"] == "deciding":
        # After the request's transaction has committed (the mark is then visible).
        tasks.add_task(
            launching.start, runtime.engine, runtime.clock, runtime.keyring, who.tenant_id,
            camp["id"], actor=who.actor, kind="decide",
        )  # fmt: skip
    else:
        response.status_code = 200
    return camp


@router.get("/frequency-caps", summary="Frequency caps by lifecycle stage")
def get_caps(who: Principal = Depends(get_principal), conn: Connection = CONN) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return {"limits": caps.get_policy(conn, who.tenant_id).as_json()}


@router.put("/frequency-caps", summary="Change frequency caps")
def set_caps(
    body: CapsIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_TENANT)
    policy = caps.set_policy(conn, runtime.clock, who.tenant_id, body.limits)
    return {"limits": policy.as_json()}


class JourneyIn(BaseModel):
    name: str = Field(max_length=100)
    trigger: str = Field(description="An event kind (add_to_cart, registration …) or birthday")
    exit_on: str | None = Field(default="order", description="An event kind that ends it")
    steps: list[dict[str, Any]] = Field(
        description='[{"kind": "wait", "minutes": 60}, {"kind": "condition", "rule": {…}}, '
        '{"kind": "send", "template_id": 3, "link_url": "https://shop.example/p", '
        '"coupon_pool_id": 2}]; a send step whose template places {link} needs link_url '
        "(http(s)), one that places {coupon} needs coupon_pool_id (one of the tenant's pools); "
        "each recipient gets their own short link and coupon, counted in the journey's report"
    )


class JourneyState(BaseModel):
    state: str = Field(pattern="^(active|paused)$")


@router.get("/journeys", summary="The tenant's journeys with their counts")
def list_journeys(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return {"journeys": journeys.list_journeys(conn, who.tenant_id)}


@router.post(
    "/journeys", status_code=201, summary="Create an active journey", responses=errors(404, 409)
)
def create_journey(
    body: JourneyIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return journeys.create(
        conn, runtime.clock, who.tenant_id, name=body.name, trigger=body.trigger,
        steps=body.steps, exit_on=body.exit_on, actor=who.actor,
    )  # fmt: skip


@router.get("/journeys/{ref}", summary="A journey, its steps and counts")
def get_journey(
    ref: str, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_REPORTS)
    return journeys.get(conn, who.tenant_id, _ref(ref))


@router.put("/journeys/{ref}/state", summary="Pause or resume a journey")
def journey_state(
    ref: str,
    body: JourneyState,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.SEND)
    return journeys.set_state(
        conn, runtime.clock, who.tenant_id, _ref(ref), body.state, actor=who.actor
    )

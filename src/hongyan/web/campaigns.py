"""Console pages for campaigns: the list (with the journeys and their counts), the wizard
(audience → copy with its lint → schedule →
review with counts and cost → launch) and each campaign's live status page.

The wizard's first three steps are one form (each step a fieldset, so it works without
JavaScript); the copy step also asks where ``{link}`` leads and which coupon pool ``{coupon}``
comes from (one of each for the campaign, given to every variant whose template places it;
shown once a chosen template places one, by CSS alone: the page allows no inline script). The
form goes through :func:`hongyan.campaigns.service.create` (the API's and CLI's path): a refusal
comes back as the form, 422, with what was typed kept, the message above it and beside the field
it concerns, and nothing stored. Saving it makes a draft, and the draft's page is the review:
who it would reach now and who is left out (suppressed, no consent, over the frequency cap,
preference), the parts and the cost, each variant's link target and pool, and the launch
button. Launching runs in the background (:mod:`hongyan.campaigns.launching`): the page
shows the campaign ``launching`` with its progress, then its counts, or the error if it could
not launch. Choosing an A/B test's winner likewise: the campaign shows ``deciding`` with the
progress of the rest, then its counts, or the test waiting again with the error. A launching,
deciding or running campaign's page refreshes its panel every two seconds (htmx ``every 2s``)
until nothing is left
to send. The page reads without taking SQLite's write lock, so it stays live while a launch
or a decision holds it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.engine import Connection

from hongyan.audience import segments
from hongyan.campaigns import journeys, launching
from hongyan.campaigns import service as campaigns
from hongyan.campaigns.windows import PRESETS
from hongyan.errors import HongyanError, NotFound
from hongyan.security.roles import Permission, can
from hongyan.tracking import coupons
from hongyan.web.console import _check_csrf, _redirect, _set_flash
from hongyan.web.records import _Page

ACTIONS = ("launch", "pause", "resume", "cancel", "decide")


def _can_send(view: _Page) -> bool:
    return can(view.principal.role, Permission.SEND)


def _id(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise NotFound("No such campaign", "找不到该营销活动")
    return int(value)


def overview(request: Request) -> Response:
    view = _Page(request, Permission.READ_REPORTS)
    with view.runtime.engine.connect() as conn:  # reads: stays live while a launch writes
        return view.respond(
            conn, "campaigns", active="campaigns", error=None,
            campaigns=campaigns.list_campaigns(conn, view.principal.tenant_id),
            journeys=journeys.list_journeys(conn, view.principal.tenant_id),
            manage=_can_send(view),
        )  # fmt: skip


def _wizard(
    view: _Page,
    conn: Connection,
    form: dict[str, Any],
    *,
    problem: HongyanError | None = None,
    status: int = 200,
) -> Response:
    tid = view.principal.tenant_id
    zh = view.lang == "zh-CN"
    page = view.respond(
        conn, "campaign_new", active="campaigns", error=None, form=form, problem=problem,
        problem_field=(problem.details or {}).get("field") if problem else None,
        segments=segments.list_segments(conn, tid), choices=campaigns.copy_choices(conn, tid),
        pools=coupons.list_pools(conn, tid),
        presets=[(k, zh_name if zh else en_name) for k, (_w, zh_name, en_name) in PRESETS.items()],
    )  # fmt: skip
    page.status_code = status
    return page


def new_campaign(request: Request) -> Response:
    view = _Page(request, Permission.SEND)
    with view.runtime.engine.begin() as conn:
        return _wizard(view, conn, {"when": "now", "on_window_end": "carry", "templates": []})


def _pool(value: str) -> int | str | None:
    """The pool select's value: an id, nothing, or what was sent (the service refuses it)."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else value


def _schedule(form: dict[str, Any]) -> dict[str, Any]:
    when = form.get("when", "now")
    if when == "at":
        return {"kind": "at", "at": form.get("at", "")}
    if when == "monthly":
        day = form.get("day", "")
        return {
            "kind": "recurring", "every": "month",
            "day": int(day) if str(day).lstrip("-").isdigit() else day,
            "time": form.get("time") or "10:00",
        }  # fmt: skip
    if when == "weekly":
        return {
            "kind": "recurring", "every": "week", "weekday": form.get("weekday", ""),
            "time": form.get("time") or "10:00",
        }  # fmt: skip
    return {"kind": "now"}


async def create(request: Request) -> Response:
    view = _Page(request, Permission.SEND)
    await _check_csrf(request, view.principal)
    raw = await request.form()
    form: dict[str, Any] = {k: str(v) for k, v in raw.items() if k != "template"}
    form["templates"] = [str(t) for t in raw.getlist("template")]
    tid = view.principal.tenant_id
    window: Any = form.get("window") or None
    if window == "custom":
        window = {"start": form.get("window_start", ""), "end": form.get("window_end", "")}
    ab = None
    if form.get("ab") == "on":
        try:
            share = float(form.get("ab_share") or 1) / 100
            wait = float(form.get("ab_wait") or 4)
        except ValueError:
            share, wait = -1.0, 4.0
        ab = {
            "share": share,
            "metric": form.get("ab_metric") or "delivery_rate",
            "wait_hours": wait,
        }
    try:
        with view.runtime.engine.begin() as conn:
            camp = campaigns.create(
                conn, view.runtime.clock, view.runtime.keyring, tid,
                name=form.get("name", ""),
                segment=int(form["segment"]) if form.get("segment", "").isdigit() else None,
                variants=[{"template_id": int(t)} for t in form["templates"] if t.isdigit()],
                schedule=_schedule(form), window=window,
                on_window_end=form.get("on_window_end", "carry"), ab=ab,
                important=form.get("important") == "on",
                link_url=form.get("link_url") or None,
                coupon_pool_id=_pool(form.get("coupon_pool", "")),
                actor=f"user:{view.principal.user_id}",
            )  # fmt: skip
    except HongyanError as exc:
        with view.runtime.engine.begin() as conn:
            return _wizard(view, conn, form, problem=exc, status=422)
    return _redirect(f"/console/campaigns/{camp['id']}")


def page(request: Request, campaign_id: str) -> Response:
    """The review (a draft: the estimate and the launch button) or the live status."""
    view = _Page(request, Permission.READ_REPORTS)
    tid = view.principal.tenant_id
    cid = _id(campaign_id)
    with view.runtime.engine.connect() as conn:  # reads: never waits for a launch's writes
        st = campaigns.status(conn, view.runtime.clock, tid, cid)
    estimate: dict[str, Any] | None = None
    problem: HongyanError | None = None
    pools: dict[int, str] = {}  # the review names each variant's coupon pool
    if st["state"] == "draft":
        # A dry launch in a savepoint that is rolled back: a writing transaction.
        with view.runtime.engine.begin() as conn:
            try:
                estimate = campaigns.estimate(conn, view.runtime.clock, tid, st["id"])
            except HongyanError as exc:
                problem = exc
            if any(v["coupon_pool_id"] for v in st["variants"]):
                pools = {p.id: p.name for p in coupons.list_pools(conn, tid)}
    waiting = sum(f["waiting"] for f in st["funnel"])
    live = st["state"] in ("launching", "deciding") or (
        st["state"] in ("running", "scheduled") and (waiting > 0 or st["phase"] == "test")
    )
    with view.runtime.engine.connect() as conn:
        return view.respond(
            conn, "campaign", active="campaigns", error=None, c=st, estimate=estimate,
            problem=problem, live=live, manage=_can_send(view), pools=pools,
            progress=(
                launching.progress(tid, cid) if st["state"] in ("launching", "deciding") else None
            ),
        )  # fmt: skip


async def act(request: Request, campaign_id: str, action: str) -> Response:
    view = _Page(request, Permission.SEND)
    await _check_csrf(request, view.principal)
    if action not in ACTIONS:
        raise NotFound("No such action", "没有该操作")
    cid = _id(campaign_id)
    tid = view.principal.tenant_id
    actor = f"user:{view.principal.user_id}"
    form = await request.form()
    response = _redirect(f"/console/campaigns/{cid}")
    clock, keyring = view.runtime.clock, view.runtime.keyring
    marked: dict[str, Any] = {}
    try:
        with view.runtime.engine.begin() as conn:
            if action == "launch":
                # Marked here; materialised in the background once this has committed.
                marked = campaigns.begin_launch(conn, clock, keyring, tid, cid, actor=actor)
            elif action == "decide":
                # Recorded here; the rest is sent the winner in the background after the commit.
                winner = str(form.get("winner") or "") or None
                marked = campaigns.begin_decide(conn, clock, tid, cid, winner=winner, actor=actor)
            else:
                getattr(campaigns, action)(conn, clock, tid, cid, actor=actor)
    except HongyanError as exc:
        _set_flash(request, response, exc.message_zh, exc.message_en)
        return response
    if action == "launch" and marked["state"] == "launching":
        launching.start(view.runtime.engine, clock, keyring, tid, cid, actor=actor)
        _set_flash(request, response, "正在后台启动", "Launching in the background", "info")
        return response
    if action == "decide":
        if marked["state"] == "deciding":
            engine = view.runtime.engine
            launching.start(engine, clock, keyring, tid, cid, actor=actor, kind="decide")
            _set_flash(
                request, response, "已确定胜出版本，正在后台为其余受众生成短信",
                "Winner chosen; the rest is being planned in the background", "info",
            )  # fmt: skip
        else:
            _set_flash(
                request, response, "检验尚未得出胜出版本，请稍后再试或手动选择",
                "The test has no winner yet: try later or choose one", "info",
            )  # fmt: skip
        return response
    _set_flash(request, response, "已完成", "Done", "info")
    return response


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    routes: list[tuple[str, Any, str]] = [
        ("/console/campaigns", overview, "GET"),
        ("/console/campaigns/new", new_campaign, "GET"),
        ("/console/campaigns/new", create, "POST"),
        ("/console/campaigns/{campaign_id}", page, "GET"),
        ("/console/campaigns/{campaign_id}/{action}", act, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

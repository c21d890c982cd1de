"""Console page to create a journey: name, trigger, exit event and up to :data:`ROWS` steps
(wait, condition, send), one form that works without JavaScript.

A send step names a template (the tenant's live approved marketing versions, each shown with
what it places) and, when its template places them, where ``{link}`` leads and which coupon pool
``{coupon}`` comes from. Everything is checked by :func:`hongyan.campaigns.journeys.create`
(the API's and CLI's path); a refusal shows the form again with its message (422) and nothing
stored. Made, the journey is listed on the campaigns page, its report under reports.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.engine import Connection

from hongyan.campaigns import journeys
from hongyan.campaigns import service as campaigns
from hongyan.contacts.events import KINDS
from hongyan.errors import HongyanError
from hongyan.security.roles import Permission
from hongyan.tracking import coupons
from hongyan.web.console import _check_csrf, _redirect, _set_flash
from hongyan.web.records import _Page

ROWS = 6  # step rows on the form (a journey may have up to journeys.MAX_STEPS through the API)
STEP_KINDS = ("wait", "condition", "send")


class _FormInvalid(HongyanError):
    code = "journey_invalid"
    status = 422


def _form_page(
    view: _Page,
    conn: Connection,
    form: dict[str, Any],
    *,
    problem: HongyanError | None = None,
    status: int = 200,
) -> Response:
    tid = view.principal.tenant_id
    page = view.respond(
        conn, "journey_new", active="campaigns", error=None, form=form, problem=problem,
        rows=range(ROWS), triggers=journeys.TRIGGERS, kinds=KINDS, step_kinds=STEP_KINDS,
        choices=campaigns.copy_choices(conn, tid), pools=coupons.list_pools(conn, tid),
    )  # fmt: skip
    page.status_code = status
    return page


def new_journey(request: Request) -> Response:
    view = _Page(request, Permission.SEND)
    with view.runtime.engine.connect() as conn:
        return _form_page(view, conn, {"trigger": "add_to_cart", "exit_on": "order"})


def _int(value: str) -> int | str:
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else value


def steps_of(form: dict[str, str]) -> list[dict[str, Any]]:
    """The steps of the form's rows, in order (rows without a kind are left out). Values are
    passed on as typed (a number where one is expected), to be checked by the service."""
    out: list[dict[str, Any]] = []
    for i in range(ROWS):
        kind = form.get(f"kind_{i}", "").strip()
        if not kind:
            continue
        step: dict[str, Any] = {"kind": kind}
        if kind == "wait":
            step["minutes"] = _int(form.get(f"minutes_{i}", ""))
        elif kind == "condition":
            text = form.get(f"rule_{i}", "").strip()
            try:
                step["rule"] = json.loads(text) if text else None
            except ValueError:
                raise _FormInvalid(
                    f"Journey: step {len(out) + 1}: the condition is not valid JSON",
                    f"旅程设置有误：第 {len(out) + 1} 步：条件不是有效的 JSON",
                ) from None
        elif kind == "send":
            step["template_id"] = _int(form.get(f"template_{i}", ""))
            link = form.get(f"link_url_{i}", "").strip()
            pool = form.get(f"coupon_pool_{i}", "").strip()
            if link:
                step["link_url"] = link
            if pool:
                step["coupon_pool_id"] = _int(pool)
        out.append(step)
    return out


async def create(request: Request) -> Response:
    view = _Page(request, Permission.SEND)
    await _check_csrf(request, view.principal)
    raw = await request.form()
    form: dict[str, Any] = {k: str(v) for k, v in raw.items()}
    exit_on = form.get("exit_on", "")
    try:
        with view.runtime.engine.begin() as conn:
            made = journeys.create(
                conn, view.runtime.clock, view.principal.tenant_id,
                name=form.get("name", ""), trigger=form.get("trigger", ""),
                steps=steps_of(form), exit_on=exit_on or None,
                actor=f"user:{view.principal.user_id}",
            )  # fmt: skip
    except HongyanError as exc:
        with view.runtime.engine.connect() as conn:
            return _form_page(view, conn, form, problem=exc, status=422)
    response = _redirect("/console/campaigns")
    name = made["name"]
    _set_flash(request, response, f"已创建旅程“{name}”", f"Journey {name!r} created", "info")
    return response


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    app.add_api_route(
        "/console/journeys/new", new_journey, methods=["GET"], include_in_schema=False
    )
    app.add_api_route("/console/journeys/new", create, methods=["POST"], include_in_schema=False)

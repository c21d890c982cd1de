"""Console pages for reports: the campaigns with messages (and the journeys and segments that
have sent), and a campaign's, journey's or segment's report with its charts (funnel, failure
reasons, provinces, the click-hour heatmap, the comparison of its variants, steps or
campaigns), each also a table; a journey's also shows its enrolments. The report panel polls
itself (htmx, every 5 s while messages are pending, else every 60 s) so a running campaign's
page keeps up; the charts are redrawn from the panel's ``data-chart`` JSON after each swap
(``/static/reports.js``; the CSP allows no inline script).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from hongyan.db.scope import TenantScope
from hongyan.db.tables import campaigns as campaign_table
from hongyan.db.tables import journeys as journey_table
from hongyan.db.tables import links
from hongyan.db.tables import messages as m
from hongyan.db.tables import segments as segment_table
from hongyan.errors import NotFound
from hongyan.reports import campaigns, journeys, segments
from hongyan.reports.messages import MAX_ID
from hongyan.security.roles import Permission
from hongyan.web import console
from hongyan.web.console import _render
from hongyan.web.records import _Page

PANEL = "report-panel"
# Per kind of report: the path segment, the function, the title key and the groups' title key.
KINDS: dict[str, tuple[str, Any, str, str]] = {
    "campaigns": ("campaign", campaigns.campaign_report, "rep.campaign", "rep.variants"),
    "journeys": ("journey", journeys.journey_report, "rep.journey", "rep.steps"),
    "segments": ("segment", segments.segment_report, "rep.segment", "rep.by_campaign"),
}


def _groups(rep: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The report's groups as (label, row): variants and steps by name, campaigns by id."""
    if "campaigns" in rep:
        return [(f"#{c['campaign_id']} {c['name']}", c) for c in rep["campaigns"]]
    return [(v["variant"], v) for v in rep["variants"]]


def _chart_data(rep: dict[str, Any], label: Any) -> dict[str, Any]:
    t = rep["totals"]
    return {
        "funnel": [
            [label("rep.f", "planned"), t["planned"]],
            [label("rep.f", "sent"), t["sent"]],
            [label("rep.f", "delivered"), t["delivered"]],
            [label("rep.f", "clicked"), t["clicks_unique"]],
            [label("rep.f", "converted"), t["conversions"]],
        ],
        "failures": [[label("reason", f["reason"]), f["count"]] for f in rep["failures"]],
        "provinces": [
            [p["province"], p["delivered"], p["clicks_unique"]] for p in rep["provinces"][:15]
        ],
        "heatmap": {
            "dates": sorted({c["date"] for c in rep["clicks_heatmap"]}),
            "cells": [[c["hour"], c["date"], c["clicks"]] for c in rep["clicks_heatmap"]],
        },
        "variants": [
            [name, v["delivery_rate"] or 0, v["click_rate"] or 0, v["conversion_rate"] or 0]
            for name, v in _groups(rep)
        ],
        "labels": {
            "delivered": label("rep.f", "delivered"),
            "clicked": label("rep.f", "clicked"),
            "delivery_rate": label("rep.col", "delivery_rate"),
            "click_rate": label("rep.col", "click_rate"),
            "conversion_rate": label("rep.col", "conversion_rate"),
        },
    }


def report_page(request: Request) -> Response:
    """A campaign's, journey's or segment's report (the kind from the path)."""
    view = _Page(request, Permission.READ_REPORTS)
    kind = request.url.path.split("/")[3]
    _name, make, title, groups_title = KINDS[kind]
    ref = _ref(request)
    partial = (
        request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == PANEL
    )
    with view.runtime.engine.connect() as conn:
        tenant = view.tenant(conn)
        rep = make(conn, view.principal.tenant_id, ref, timezone=tenant.timezone)
        from hongyan.web.records import labeller

        label = labeller(view.lang)
        return _render(
            request,
            "report_campaign_panel.html" if partial else "report_campaign.html",
            lang=view.lang,
            principal=view.principal,
            tenant_name=tenant.name,
            active="reports",
            rep=rep,
            title_key=title,
            title_name=rep.get("name", ""),
            ref=ref,
            self_url=f"/console/reports/{kind}/{ref}",
            groups_title=groups_title,
            groups=_groups(rep),
            panel=PANEL,
            poll="5s" if rep["totals"]["pending"] else "60s",
            label=label,
            chart=json.dumps(_chart_data(rep, label), ensure_ascii=False),
        )


def _ref(request: Request) -> int:
    """The report's id from the path; one past any id (the route takes any digits) is none."""
    ref = int(request.path_params["ref"])
    if ref > MAX_ID:
        raise NotFound("No such report", "找不到该报表")
    return ref


def reports_page(request: Request) -> Response:
    """The tenant's campaigns that have messages or links, newest id first."""
    view = _Page(request, Permission.READ_REPORTS)
    tid = view.principal.tenant_id
    scope = TenantScope(tid)
    with view.runtime.engine.connect() as conn:
        tenant = view.tenant(conn)
        ids = set(
            conn.execute(
                scope.select(m, m.c.campaign_id).where(m.c.campaign_id.is_not(None)).distinct()
            ).scalars()
        ) | set(
            conn.execute(
                scope.select(links, links.c.campaign_id)
                .where(links.c.campaign_id.is_not(None))
                .distinct()
            ).scalars()
        )
        # Journeys that have sent, and segments with campaigns: each has a report too.
        sent = {
            str(ref)
            for ref in conn.execute(
                scope.select(m, m.c.source_ref)
                .where(m.c.source == "journey", m.c.source_ref.is_not(None))
                .distinct()
            ).scalars()
        }
        jny = [
            r
            for r in conn.execute(
                scope.select(journey_table, journey_table.c.id, journey_table.c.name).order_by(
                    journey_table.c.id.desc()
                )
            )
            if f"journey:{r.id}" in sent
        ]
        seg = conn.execute(
            scope.select(segment_table, segment_table.c.id, segment_table.c.name)
            .where(
                segment_table.c.id.in_(
                    scope.select(campaign_table, campaign_table.c.segment_id).where(
                        campaign_table.c.segment_id.is_not(None)
                    )
                )
            )
            .order_by(segment_table.c.id.desc())
        ).all()
        return _render(
            request,
            "reports.html",
            lang=view.lang,
            principal=view.principal,
            tenant_name=tenant.name,
            active="reports",
            campaign_ids=sorted(ids, reverse=True)[:200],
            journeys=jny[:200],
            segments=seg[:200],
        )


async def export(request: Request) -> Response:
    from hongyan.reports import export as exports

    view = _Page(request, Permission.READ_REPORTS)
    name, make, _title, _groups_title = KINDS[request.url.path.split("/")[3]]
    ref = _ref(request)
    kind = request.path_params["ext"]
    if kind not in ("csv", "xlsx"):  # (and never into the header unchecked)
        raise NotFound("No such export: CSV or XLSX", "没有该格式的导出：仅支持 CSV 或 XLSX")
    with view.runtime.engine.connect() as conn:
        tz = view.tenant(conn).timezone
        rep = make(conn, view.principal.tenant_id, ref, timezone=tz)
    if kind == "xlsx":
        body, media = (
            exports.to_xlsx(rep),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    else:
        body, media = exports.to_csv(rep), "text/csv; charset=utf-8"
    return Response(
        body,
        media_type=media,
        headers={
            "content-disposition": f'attachment; filename="{name}-{ref}.{kind}"',
            **console.SECURITY_HEADERS,
        },
    )


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    console.BUILT.add("reports")
    app.add_api_route("/console/reports", reports_page, methods=["GET"], include_in_schema=False)
    for kind in KINDS:
        app.add_api_route(
            f"/console/reports/{kind}/{{ref:int}}",
            report_page,
            methods=["GET"],
            include_in_schema=False,
        )
        app.add_api_route(
            f"/console/reports/{kind}/{{ref:int}}/export.{{ext:str}}",
            export,
            methods=["GET"],
            include_in_schema=False,
        )

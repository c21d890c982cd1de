"""Console pages for reports: the campaigns with messages, and a campaign's report with its
charts (funnel, failure reasons, provinces, the click-hour heatmap, the A/B comparison), each
also a table. The report panel polls itself (htmx, every 5 s while messages are pending, else
every 60 s) so a running campaign's page keeps up; the charts are redrawn from the panel's
``data-chart`` JSON after each swap (``/static/reports.js``; the CSP allows no inline script).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from hongyan.db.scope import TenantScope
from hongyan.db.tables import links
from hongyan.db.tables import messages as m
from hongyan.reports import campaigns
from hongyan.security.roles import Permission
from hongyan.web import console
from hongyan.web.console import _render
from hongyan.web.records import _Page

PANEL = "report-panel"


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
            [
                v["variant"],
                v["delivery_rate"] or 0,
                v["click_rate"] or 0,
                v["conversion_rate"] or 0,
            ]
            for v in rep["variants"]
        ],
        "labels": {
            "delivered": label("rep.f", "delivered"),
            "clicked": label("rep.f", "clicked"),
            "delivery_rate": label("rep.col", "delivery_rate"),
            "click_rate": label("rep.col", "click_rate"),
            "conversion_rate": label("rep.col", "conversion_rate"),
        },
    }


def campaign_page(request: Request) -> Response:
    view = _Page(request, Permission.READ_REPORTS)
    campaign_id = int(request.path_params["campaign_id"])
    partial = (
        request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == PANEL
    )
    with view.runtime.engine.connect() as conn:
        tenant = view.tenant(conn)
        rep = campaigns.campaign_report(
            conn, view.principal.tenant_id, campaign_id, timezone=tenant.timezone
        )
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
            panel=PANEL,
            poll="5s" if rep["totals"]["pending"] else "60s",
            label=label,
            chart=json.dumps(_chart_data(rep, label), ensure_ascii=False),
        )


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
        return _render(
            request,
            "reports.html",
            lang=view.lang,
            principal=view.principal,
            tenant_name=tenant.name,
            active="reports",
            campaign_ids=sorted(ids, reverse=True)[:200],
        )


async def export(request: Request) -> Response:
    from hongyan.reports import export as exports

    view = _Page(request, Permission.READ_REPORTS)
    campaign_id = int(request.path_params["campaign_id"])
    kind = request.path_params["kind"]
    with view.runtime.engine.connect() as conn:
        tz = view.tenant(conn).timezone
        rep = campaigns.campaign_report(conn, view.principal.tenant_id, campaign_id, timezone=tz)
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
            "content-disposition": f'attachment; filename="campaign-{campaign_id}.{kind}"',
            **console.SECURITY_HEADERS,
        },
    )


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    console.BUILT.add("reports")
    app.add_api_route("/console/reports", reports_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/console/reports/campaigns/{campaign_id:int}",
        campaign_page,
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/console/reports/campaigns/{campaign_id:int}/export.{kind:str}",
        export,
        methods=["GET"],
        include_in_schema=False,
    )

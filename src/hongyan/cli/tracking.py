"""`hongyan redirector`, `hongyan coupons`, `hongyan links`, `hongyan report`: tracking and
reports from the command line (issue 8)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

coupons_app = typer.Typer(help="Coupon pools: create, import codes, list", no_args_is_help=True)
links_app = typer.Typer(help="Short links: the tenant's domain and window", no_args_is_help=True)
report_app = typer.Typer(
    help="Reports: a campaign's, journey's or segment's funnel, delivery, ROI", no_args_is_help=True
)

TenantOpt = Annotated[str, typer.Option(help="Tenant slug")]


def _tenant_id(runtime: Any, slug: str) -> int:
    from hongyan.tenants import service as tenants

    with runtime.engine.connect() as conn:
        return int(tenants.get_tenant(conn, slug).id)


def redirector(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    trust_forwarded: Annotated[
        bool, typer.Option(help="Take the client address from X-Forwarded-For (behind a proxy)")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes sharing the port (one per core)")
    ] = 1,
) -> None:
    """Serve short-link redirects alone (GET /{code}; GET /healthz), recording every click."""
    import os

    import uvicorn

    from hongyan.logs import configure as configure_logs
    from hongyan.tracking import redirector as redirect

    runtime = open_runtime()
    configure_logs()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "loop": "uvloop",
        "http": "httptools",
        "backlog": 4096,
    }
    if workers == 1:
        uvicorn.run(
            redirect.create(runtime, trust_forwarded=trust_forwarded, standalone=True), **options
        )
        return
    runtime.close()  # each worker builds its own (a forked engine must not be shared)
    os.environ["HONGYAN_TRUST_FORWARDED"] = "1" if trust_forwarded else "0"
    uvicorn.run(
        "hongyan.tracking.redirector:from_environment", factory=True, workers=workers, **options
    )


@coupons_app.command("create")
def coupons_create(
    tenant: TenantOpt,
    name: str,
    kind: Annotated[
        str, typer.Option(help="generate (codes drawn as issued) or import (your own codes)")
    ] = "generate",
    amount: Annotated[int | None, typer.Option(help="The discount in fen, for reports")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a coupon pool."""
    from hongyan.tracking import coupons

    runtime = open_runtime()
    tid = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        pool_id = coupons.create_pool(
            conn, tid, runtime.clock.now(), name=name, kind=kind, amount_fen=amount
        )
    emit({"id": pool_id, "name": name, "kind": kind}, as_json, f"[green]✓[/green] pool {pool_id}")


@coupons_app.command("import")
def coupons_import(
    tenant: TenantOpt,
    pool: int,
    file: Annotated[Path, typer.Argument(help="One code per line ('-': standard input)")],
    as_json: JsonOpt = False,
) -> None:
    """Import the tenant's own codes into an import pool (duplicates are skipped)."""
    from hongyan.tracking import coupons

    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8-sig")
    runtime = open_runtime()
    tid = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        result = coupons.import_codes(conn, tid, pool, text.splitlines())
    emit(result, as_json, f"[green]✓[/green] {result['added']} added, {result['duplicates']} dup")


@coupons_app.command("list")
def coupons_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's pools with available, issued and redeemed counts."""
    from hongyan.tracking import coupons

    runtime = open_runtime()
    tid = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        pools = [p.as_json() for p in coupons.list_pools(conn, tid)]
    emit(
        {"pools": pools},
        as_json,
        "\n".join(
            f"{p['id']:>5} {p['name']:<20} {p['kind']:<8} available {p['available']} "
            f"issued {p['issued']} redeemed {p['redeemed']}"
            for p in pools
        )
        or "(no pools)",
    )


@links_app.command("settings")
def links_settings(
    tenant: TenantOpt,
    base: Annotated[
        str | None, typer.Option(help="Short-link base, e.g. https://t.example")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Attribution window in days")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set the tenant's short-link domain and attribution window."""
    from hongyan.tracking import links

    runtime = open_runtime()
    tid = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        if base is None and window is None:
            s = links.settings_of(conn, tid)
        else:
            s = links.configure(
                conn, tid, runtime.clock.now(), link_base=base, attribution_days=window
            )
    data = {"link_base": s.link_base, "attribution_days": s.attribution_days}
    emit(data, as_json, f"link base {s.link_base}, window {s.attribution_days} days")


def register(app: typer.Typer) -> None:
    app.command("redirector")(reports_errors(redirector))
    for group in (coupons_app, links_app, report_app):
        for command in group.registered_commands:
            if command.callback is not None:
                command.callback = reports_errors(command.callback)
    app.add_typer(coupons_app, name="coupons")
    app.add_typer(links_app, name="links")
    app.add_typer(report_app, name="report")


def _report(
    kind: str,
    ref: int,
    tenant: str,
    csv_out: Path | None,
    xlsx_out: Path | None,
    places: bool,
    as_json: bool,
) -> None:
    """Make a campaign's, journey's or segment's report; write the files; print it."""
    from hongyan.reports import campaigns, export, journeys, segments
    from hongyan.tenants import service as tenants

    make = {
        "campaign": campaigns.campaign_report,
        "journey": journeys.journey_report,
        "segment": segments.segment_report,
    }[kind]
    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        rep = make(conn, t.id, ref, timezone=t.timezone, places=places)
    if csv_out is not None:
        csv_out.write_bytes(export.to_csv(rep))
    if xlsx_out is not None:
        xlsx_out.write_bytes(export.to_xlsx(rep))
    tot = rep["totals"]
    lines = [f"{kind} {ref}" + (f" {rep['name']}" if "name" in rep else "")]
    groups = rep.get("campaigns", rep.get("variants", []))
    for row in [{"group": "all", **tot}, *groups]:
        group = row.get("group", row.get("variant", row.get("campaign_id")))
        lines.append(
            f"  {group!s:<6} planned {row['planned']:>8} sent {row['sent']:>8} "
            f"delivered {row['delivered']:>8} failed {row['failed']:>6} "
            f"clicked {row['clicks_unique']:>6}/{row['clicks_total']:<6} "
            f"converted {row['conversions']:>5} revenue ¥{row['revenue_fen'] / 100:,.2f} "
            f"cost ¥{row['cost_fen'] / 100:,.2f} ROI {row['roi']}"
        )
    lines += [f"  failed: {f['reason']} × {f['count']}" for f in rep["failures"]]
    if "enrolments" in rep:
        lines.append(
            "  enrolments: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["enrolments"].items()))
        )
    emit(rep, as_json, "\n".join(lines))


CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Also write a CSV here")]
XlsxOpt = Annotated[Path | None, typer.Option("--xlsx", help="Also write an XLSX here")]
PlacesOpt = Annotated[bool, typer.Option(help="Provinces and cities (--no-places: without)")]


@report_app.command("campaign")
def report_campaign(
    campaign_id: int,
    tenant: TenantOpt,
    csv_out: CsvOpt = None,
    xlsx_out: XlsxOpt = None,
    places: PlacesOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """A campaign's funnel, failures, places, clicks by hour, cost and ROI."""
    _report("campaign", campaign_id, tenant, csv_out, xlsx_out, places, as_json)


@report_app.command("journey")
def report_journey(
    journey_id: int,
    tenant: TenantOpt,
    csv_out: CsvOpt = None,
    xlsx_out: XlsxOpt = None,
    places: PlacesOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """A journey's funnel per send step, failures, places, cost, and its enrolments."""
    _report("journey", journey_id, tenant, csv_out, xlsx_out, places, as_json)


@report_app.command("segment")
def report_segment(
    segment_id: int,
    tenant: TenantOpt,
    csv_out: CsvOpt = None,
    xlsx_out: XlsxOpt = None,
    places: PlacesOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """The funnel across the campaigns sent to a segment, per campaign."""
    _report("segment", segment_id, tenant, csv_out, xlsx_out, places, as_json)

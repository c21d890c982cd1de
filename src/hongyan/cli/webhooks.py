"""`hongyan webhooks`: a tenant's webhook endpoints and their delivery log."""

from __future__ import annotations

from typing import Annotated

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

webhooks_app = typer.Typer(
    help="Webhooks: signed HTTP callbacks for message status, replies and opt-outs",
    no_args_is_help=True,
)


@webhooks_app.command("add")
@reports_errors
def webhooks_add(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    url: Annotated[str, typer.Option(help="https://… (http:// allowed outside production)")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help="message.status, message.reply, message.opt_out or * (repeat; default: all)",
        ),
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add an endpoint; its signing secret is printed once and cannot be shown again."""
    from hongyan.tenants import service as tenants
    from hongyan.webhooks import service

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        made = service.create(
            conn,
            runtime.clock,
            runtime.keyring,
            service.UrlPolicy.from_settings(runtime.settings),
            t.id,
            url=url,
            events=event or list(service.DEFAULT_EVENTS),
            description=description,
            actor="cli",
        )
    ep = made.endpoint
    emit(
        {**ep, "tenant": t.slug, "secret": made.secret},
        as_json,
        f"[green]✓[/green] webhook {ep['id']} for {t.slug}: {ep['url']} "
        f"({', '.join(ep['events'])})\n  secret: {made.secret}\n"
        "[yellow]Store the secret now: it will not be shown again.[/yellow]",
    )


@webhooks_app.command("list")
@reports_errors
def webhooks_list(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    as_json: JsonOpt = False,
) -> None:
    """A tenant's endpoints."""
    from hongyan.tenants import service as tenants
    from hongyan.webhooks import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        items = service.listing(conn, t.id)
    lines = [
        f"{e['id']:>4}  {'active' if e['active'] else 'off':<6} {e['url']}  "
        f"[dim]{', '.join(e['events'])}[/dim]"
        for e in items
    ]
    emit({"tenant": t.slug, "webhooks": items}, as_json, "\n".join(lines) or "no webhooks")


@webhooks_app.command("deliveries")
@reports_errors
def webhooks_deliveries(
    endpoint_id: int,
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    before: Annotated[int | None, typer.Option(help="Only deliveries older than this id")] = None,
    state: Annotated[str | None, typer.Option(help="pending, sending, delivered or dead")] = None,
    as_json: JsonOpt = False,
) -> None:
    """An endpoint's deliveries, newest first, with every attempt."""
    from hongyan.tenants import service as tenants
    from hongyan.webhooks import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        page = service.deliveries(conn, t.id, endpoint_id, limit=limit, before=before, state=state)
    lines = []
    for d in page.items:
        last = d["last_status"] or d["last_error"] or ""
        lines.append(
            f"{d['id']:>6}  {d['event']:<16} {d['state']:<9} attempts {d['attempts']:>2}  {last}"
        )
        for a in d["attempt_log"]:
            lines.append(
                f"        {a['at']:%Y-%m-%d %H:%M:%S}  "
                f"{a['status_code'] or '-':>3}  {a['duration_ms']:>5} ms  {a['error'] or ''}"
            )
    if page.next_before:
        lines.append(f"[dim]older: --before {page.next_before}[/dim]")
    emit(
        {"tenant": t.slug, "endpoint_id": endpoint_id, **page.__dict__},
        as_json,
        "\n".join(lines) or "no deliveries",
    )

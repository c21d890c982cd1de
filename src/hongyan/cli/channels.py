"""`hongyan channels`, `hongyan routes`, `hongyan suppressions`: the operator's sending setup."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit
from hongyan.errors import ValidationFailed

channels_app = typer.Typer(
    help="Carrier channels (SMPP binds, HTTP providers)", no_args_is_help=True
)
routes_app = typer.Typer(help="A tenant's routes onto channels", no_args_is_help=True)
suppressions_app = typer.Typer(help="Numbers a tenant must not send to", no_args_is_help=True)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationFailed(
                f"{what} must look like key=value: {item!r}", f"{what} 格式应为 key=value：{item!r}"
            )
        out[key.strip()] = value
    return out


def _typed(config: dict[str, str]) -> dict[str, Any]:
    """Numbers stay numbers, comma lists (invalid_errs, blocked_errs) become lists."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("port", "enquire_interval", "response_timeout", "reconnect_max"):
            out[key] = float(value) if "." in value else int(value)
        elif key in ("invalid_errs", "blocked_errs"):
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out[key] = value
    return out


@channels_app.command("add")
@reports_errors
def channels_add(
    name: str,
    kind: Annotated[str, typer.Option(help="smpp, aliyun, tencent or twilio")] = "smpp",
    url: Annotated[
        str | None, typer.Option(help="For smpp: smpp://system_id:password@host:port")
    ] = None,
    config: Annotated[list[str], typer.Option("--config", help="key=value (repeat)")] = [],  # noqa: B006
    secret: Annotated[list[str], typer.Option("--secret", help="key=value, stored encrypted")] = [],  # noqa: B006
    rate: Annotated[
        float, typer.Option(help="Messages per second across dispatchers; 0: none")
    ] = 0.0,
    window: Annotated[int, typer.Option(help="Requests outstanding per bind")] = 10,
    binds: Annotated[int, typer.Option(help="SMPP binds (connections)")] = 1,
    carriers: Annotated[str, typer.Option(help="cmcc,cucc,ctcc,cbn,intl; empty: all")] = "",
    price: Annotated[str, typer.Option(help="Price per part, e.g. 0.04")] = "0",
    currency: Annotated[str, typer.Option()] = "CNY",
    priority: Annotated[int, typer.Option(help="Lower first when a tenant has no route")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Add a channel. Secrets (passwords, access key secrets) are stored encrypted."""
    from hongyan.channels import service as store
    from hongyan.dispatch.service import parse_smpp_url

    cfg: dict[str, Any] = _typed(_pairs(config, "--config"))
    secrets = _pairs(secret, "--secret")
    if url:
        parsed = parse_smpp_url(url, name=name)
        cfg = {**parsed.config, **cfg}
        secrets = {**parsed.secrets, **secrets}
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        spec = store.add_channel(
            conn,
            runtime.clock,
            runtime.keyring,
            name=name,
            kind=kind,
            config=cfg,
            secrets=secrets,
            rate=rate,
            window=window,
            binds=binds,
            carriers=carriers.split(","),
            price_per_part=price,
            currency=currency,
            priority=priority,
        )
    emit(
        {
            "name": spec.name,
            "kind": spec.kind,
            "config": dict(spec.config),
            "secrets": sorted(secrets),
        },
        as_json,
        f"[green]✓[/green] channel {spec.name} ({spec.kind}) added; dispatchers pick it up "
        "within 10 s",
    )


@channels_app.command("list")
@reports_errors
def channels_list(as_json: JsonOpt = False) -> None:
    """List channels (never their secrets)."""
    from hongyan.channels import service as store

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        rows = store.list_channels(conn)
    for r in rows:
        r["created_at"] = r["created_at"].isoformat()
        r["updated_at"] = r["updated_at"].isoformat()
    emit(
        {"channels": rows},
        as_json,
        "\n".join(
            f"{r['name']:<16} {r['kind']:<8} {'on ' if r['enabled'] else 'off'} "
            f"rate {r['rate']:g}/s window {r['window']} binds {r['binds']} "
            f"carriers {','.join(r['carriers']) or 'all'} price {r['price_per_part']}"
            for r in rows
        )
        or "no channels",
    )


@channels_app.command("update")
@reports_errors
def channels_update(
    name: str,
    rate: Annotated[float | None, typer.Option()] = None,
    window: Annotated[int | None, typer.Option()] = None,
    binds: Annotated[int | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option()] = None,
    carriers: Annotated[str | None, typer.Option()] = None,
    price: Annotated[str | None, typer.Option()] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a channel's pacing, reach, price or state."""
    from hongyan.channels import service as store

    values: dict[str, Any] = {
        k: v
        for k, v in {
            "rate": rate,
            "window": window,
            "binds": binds,
            "priority": priority,
            "price_per_part": price,
            "enabled": enabled,
        }.items()
        if v is not None
    }
    if carriers is not None:
        values["carriers"] = carriers.split(",")
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        store.update_channel(conn, runtime.clock, name, **values)
    emit({"name": name, **values}, as_json, f"[green]✓[/green] channel {name} updated")


@channels_app.command("remove")
@reports_errors
def channels_remove(name: str, as_json: JsonOpt = False) -> None:
    """Remove a channel (messages keep its name in their history)."""
    from hongyan.channels import service as store

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        store.remove_channel(conn, name)
    emit({"name": name, "removed": True}, as_json, f"[green]✓[/green] channel {name} removed")


@routes_app.command("set")
@reports_errors
def routes_set(
    channels: Annotated[list[str], typer.Argument(help="Channels in failover order")],
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    lane: Annotated[
        str | None, typer.Option(help="verification, notification or marketing; default all")
    ] = None,
    carrier: Annotated[str | None, typer.Option(help="cmcc, cucc, ctcc, cbn, intl")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Route a tenant's messages (of a lane, to a carrier) onto channels, first to last."""
    from hongyan.channels import service as store
    from hongyan.dispatch.states import lane_for
    from hongyan.tenants import service

    try:
        lane_value = lane_for(lane) if lane else None
    except ValueError as exc:
        raise ValidationFailed(str(exc), f"未知类别 {lane!r}") from None
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, tenant)
        route = store.set_route(
            conn, runtime.clock, t.id, channels, lane=lane_value, carrier=carrier
        )
    emit(
        {"tenant": tenant, "lane": route.lane, "carrier": route.carrier, "channels": channels},
        as_json,
        f"[green]✓[/green] {tenant}: {lane or 'all lanes'} / {route.carrier} → "
        + " → ".join(channels),
    )


@routes_app.command("list")
@reports_errors
def routes_list(
    tenant: Annotated[str, typer.Option(help="Tenant slug")], as_json: JsonOpt = False
) -> None:
    """A tenant's routes (without one, every enabled channel in priority order)."""
    from hongyan.channels import service as store
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = service.get_tenant(conn, tenant)
        rows = store.tenant_routes(conn, t.id)
    items = [{"lane": r.lane, "carrier": r.carrier, "channels": list(r.channels)} for r in rows]
    emit(
        {"tenant": tenant, "routes": items},
        as_json,
        "\n".join(f"lane {r.lane:>2} {r.carrier:<5} → {' → '.join(r.channels)}" for r in rows)
        or "no routes: every enabled channel, lowest priority first",
    )


@suppressions_app.command("list")
@reports_errors
def suppressions_list(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    limit: Annotated[int, typer.Option()] = 100,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's suppression list, numbers masked."""
    from hongyan.contacts import suppression
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = service.get_tenant(conn, tenant)
        rows = suppression.list_for(conn, t.id, limit=limit)
    for r in rows:
        for k in ("created_at", "expires_at"):
            r[k] = r[k].isoformat() if r[k] else None
    emit(
        {"tenant": tenant, "suppressions": rows},
        as_json,
        "\n".join(
            f"{r['phone_masked']:<14} {r['reason']:<9} {r['scope']:<9} {r['source']:<8} "
            f"{r['created_at']}"
            for r in rows
        )
        or "none",
    )


@suppressions_app.command("add")
@reports_errors
def suppressions_add(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    to: Annotated[str, typer.Option(help="E.164 number")],
    reason: Annotated[str, typer.Option(help="manual, complaint, opt_out or invalid")] = "manual",
    detail: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Block a number for a tenant (manual: everything; complaint / opt_out: marketing)."""
    from hongyan.contacts import suppression
    from hongyan.dispatch.outbox import E164, InvalidNumber
    from hongyan.security.keyring import mask_phone
    from hongyan.tenants import service

    if not E164.match(to):
        raise InvalidNumber()
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, tenant)
        item = suppression.NewSuppression(t.id, to, reason, "cli", detail)
        new = suppression.block(conn, runtime.clock, runtime.keyring, item, "cli")
    emit(
        {"tenant": tenant, "to": mask_phone(to), "reason": reason, "added": bool(new)},
        as_json,
        f"[green]✓[/green] {mask_phone(to)} suppressed ({reason})"
        if new
        else f"{mask_phone(to)} was already suppressed ({reason})",
    )

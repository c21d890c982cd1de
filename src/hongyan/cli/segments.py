"""`hongyan segments`, `hongyan rfm`, `hongyan lifecycle`, `hongyan stores`, `hongyan audience`:
audiences from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

segments_app = typer.Typer(
    help="Segments: rules over contacts, preview, export, snapshot", no_args_is_help=True
)
stores_app = typer.Typer(
    help="A tenant's stores (for 'within N km of a store')", no_args_is_help=True
)
audience_app = typer.Typer(
    help="Audience settings and the RFM / lifecycle / location recompute", no_args_is_help=True
)

TenantOpt = Annotated[str, typer.Option(help="Tenant slug")]
RuleOpt = Annotated[
    str,
    typer.Option(
        "--rule",
        help='The rule as JSON, or @FILE: {"all": [{"field": "lifecycle", "op": "eq", '
        '"value": "active"}]}; `hongyan segments schema` lists the fields',
    ),
]


def _tenant_id(runtime: Any, slug: str) -> int:
    from hongyan.tenants import service as tenants

    with runtime.engine.connect() as conn:
        return int(tenants.get_tenant(conn, slug).id)


def _rule(text: str) -> Any:
    from hongyan.errors import ValidationFailed

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ValidationFailed(f"No file {path}", f"找不到文件 {path}")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"The rule is not valid JSON: {exc.msg} (position {exc.pos})",
            f"规则不是有效的 JSON：{exc.msg}（位置 {exc.pos}）",
        ) from None


def _ref(segment: str) -> int | str:
    return int(segment) if segment.isdigit() else segment


def _sample_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['id']:>8}  {r['phone_masked']:<12} {r['name_masked'] or '—':<6} "
        f"{r['city'] or r['number_city'] or '':<6} {r['lifecycle']:<9} {r['rfm_group'] or ''}"
        for r in rows
    ]


@segments_app.command("schema")
@reports_errors
def segments_schema(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The fields and operators this tenant's rules may use."""
    from hongyan.audience import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        schema = service.load_schema(conn, tenant_id)
    fields = schema.describe()
    lines = [
        f"{f['field']:<22} {f['type']:<9} {f['label']['zh']:<10} {' '.join(f['operators'])}"
        for f in fields
    ]
    emit({"fields": fields}, as_json, "\n".join(lines))


@segments_app.command("create")
@reports_errors
def segments_create(
    name: str, tenant: TenantOpt, rule: RuleOpt, description: str = "", as_json: JsonOpt = False
) -> None:
    """Save a segment (the rule is checked first)."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        seg = segments.create(
            conn, runtime.clock, tenant_id, name=name, rule=_rule(rule), description=description,
            actor="cli",
        )  # fmt: skip
    emit(seg, as_json, f"[green]✓[/green] segment {seg['id']} {seg['name']} saved")


@segments_app.command("update")
@reports_errors
def segments_update(
    segment: str,
    tenant: TenantOpt,
    rule: Annotated[str | None, typer.Option("--rule", help="New rule (JSON or @FILE)")] = None,
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a segment's rule or name."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        seg_id = int(segments.get(conn, tenant_id, _ref(segment))["id"])
        seg = segments.update(
            conn, runtime.clock, tenant_id, seg_id, name=name,
            rule=_rule(rule) if rule else None, actor="cli",
        )  # fmt: skip
    emit(seg, as_json, f"[green]✓[/green] segment {seg['id']} {seg['name']} changed")


@segments_app.command("list")
@reports_errors
def segments_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Saved segments."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        rows = segments.list_segments(conn, tenant_id)
    lines = [
        f"{s['id']:>5}  {s['name']}  {json.dumps(s['rule'], ensure_ascii=False)}" for s in rows
    ]
    emit({"segments": rows}, as_json, "\n".join(lines) or "no segments")


@segments_app.command("show")
@reports_errors
def segments_show(segment: str, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """A segment, by id or name."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        seg = segments.get(conn, tenant_id, _ref(segment))
    emit(seg, as_json, json.dumps(seg, ensure_ascii=False, indent=2, default=str))


@segments_app.command("delete")
@reports_errors
def segments_delete(segment: str, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Delete a segment (refused while another segment uses it)."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        seg = segments.get(conn, tenant_id, _ref(segment))
        segments.delete(conn, runtime.clock, tenant_id, int(seg["id"]), actor="cli")
    emit({"deleted": seg["id"]}, as_json, f"[green]✓[/green] segment {seg['name']} deleted")


@segments_app.command("preview")
@reports_errors
def segments_preview(
    tenant: TenantOpt,
    segment: Annotated[str | None, typer.Argument(help="A saved segment (id or name)")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Or a rule (JSON or @FILE)")] = None,
    sample: Annotated[int, typer.Option(min=0, max=100)] = 10,
    reach: Annotated[
        str | None, typer.Option(help="marketing / notification: who a snapshot would exclude")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """How many contacts match now, and a masked sample."""
    from hongyan.audience import segments
    from hongyan.errors import ValidationFailed

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        if segment is not None:
            the_rule = segments.rule_of(conn, tenant_id, _ref(segment))
        elif rule is not None:
            the_rule = _rule(rule)
        else:
            raise ValidationFailed("Name a segment or give --rule", "请指定人群或 --rule 规则")
        got = segments.preview(conn, runtime.clock, tenant_id, the_rule, sample=sample, reach=reach)
    lines = [f"[bold]{got['count']}[/bold] contacts", *_sample_lines(got["sample"])]
    if "reach" in got:
        lines.append("reach: " + ", ".join(f"{k} {v}" for k, v in got["reach"].items()))
    emit(got, as_json, "\n".join(lines))


@segments_app.command("export")
@reports_errors
def segments_export(
    segment: str,
    tenant: TenantOpt,
    output: Annotated[Path | None, typer.Option("-o", help="Write the CSV here")] = None,
) -> None:
    """Every member as CSV (numbers and names masked; Excel-safe)."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    chunks = segments.export_csv(
        runtime.engine, runtime.clock, tenant_id, _ref(segment), actor="cli"
    )
    if output:
        with output.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
    else:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)


@segments_app.command("snapshot")
@reports_errors
def segments_snapshot(
    segment: str,
    tenant: TenantOpt,
    purpose: Annotated[str, typer.Option(help="marketing or notification")] = "marketing",
    campaign: Annotated[str | None, typer.Option(help="The campaign's reference")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Freeze the segment now into an audience; says how many were excluded and why."""
    from hongyan.audience import segments

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        aud = segments.snapshot(
            conn, runtime.clock, tenant_id, segment=_ref(segment), purpose=purpose,
            campaign_ref=campaign, actor="cli",
        )  # fmt: skip
    c = aud["counts"]
    emit(
        aud,
        as_json,
        f"[green]✓[/green] audience {aud['id']}: {c['included']} included of {c['matched']} "
        f"matched; excluded {c['suppressed']} suppressed, {c['no_consent']} without consent",
    )


# -- rfm, lifecycle --------------------------------------------------------------------------------


def rfm(
    tenant: TenantOpt,
    recompute_now: Annotated[
        bool, typer.Option("--recompute", help="Recompute RFM, lifecycle and locations first")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """RFM: buyers, mean scores, the eight groups with revenue, the R × F grid."""
    from hongyan.audience import recompute, scoring, service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    if recompute_now:
        recompute.recompute(runtime.engine, runtime.clock, tenant_id)
    with runtime.engine.connect() as conn:
        body: dict[str, Any] = {
            "computed_at": service.get_settings(conn, tenant_id).computed_at,
            **recompute.distribution(conn, tenant_id),
            "group_revenue": recompute.group_revenue(conn, tenant_id),
            "grid": recompute.grid(conn, tenant_id),
        }
    with runtime.engine.connect() as conn:
        body["scores"] = recompute.score_counts(conn, tenant_id)
    lines = [
        f"buyers {body['buyers']} of {body['contacts']} contacts; computed "
        f"{body['computed_at'] or 'never'}; means {body['means']}"
    ]
    for code, (zh, _en) in scoring.GROUP_NAMES.items():
        g = body["group_revenue"][code]
        lines.append(f"  {zh:<8} {g['buyers']:>8}  ¥{g['revenue_fen'] / 100:,.2f}")
    emit(body, as_json, "\n".join(lines))


def lifecycle(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Contacts per lifecycle stage, evaluated now with the tenant's thresholds."""
    from hongyan.audience import recompute, scoring, service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        stages = recompute.lifecycle_now(conn, runtime.clock, tenant_id)
        thresholds = service.get_settings(conn, tenant_id).as_json()["lifecycle"]
    lines = [f"  {scoring.STAGE_NAMES[s][0]:<8} {n:>8}" for s, n in stages.items()]
    emit({"stages": stages, "thresholds": thresholds}, as_json, "\n".join(lines))


# -- stores, settings ------------------------------------------------------------------------------


@stores_app.command("add")
@reports_errors
def stores_add(
    name: str,
    tenant: TenantOpt,
    lat: Annotated[float | None, typer.Option(help="Latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="Longitude")] = None,
    address: Annotated[str, typer.Option(help="Or an address naming the district")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add a store at its coordinates, or at the centre of the district its address names."""
    from hongyan.audience import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        store = service.add_store(
            conn, runtime.clock, tenant_id, name=name, lat=lat, lon=lon, address=address
        )
    emit(
        store, as_json, f"[green]✓[/green] store {store['name']} at {store['lat']}, {store['lon']}"
    )


@stores_app.command("list")
@reports_errors
def stores_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    from hongyan.audience import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        rows = service.list_stores(conn, tenant_id)
    lines = [
        f"{s['id']:>4}  {s['name']}  {s['lat']:.5f}, {s['lon']:.5f}  {s['address']}" for s in rows
    ]
    emit({"stores": rows}, as_json, "\n".join(lines) or "no stores")


@stores_app.command("remove")
@reports_errors
def stores_remove(store: str, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    from hongyan.audience import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        service.remove_store(conn, tenant_id, _ref(store))
    emit({"removed": store}, as_json, f"[green]✓[/green] store {store} removed")


@audience_app.command("settings")
@reports_errors
def audience_settings(
    tenant: TenantOpt,
    new_days: Annotated[int | None, typer.Option(help="New: first seen within N days")] = None,
    active_days: Annotated[int | None, typer.Option(help="Active: an order within N days")] = None,
    dormant_days: Annotated[int | None, typer.Option(help="Dormant: no order for N days")] = None,
    lost_days: Annotated[int | None, typer.Option(help="Lost: no interaction for N days")] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="r=4, f=mean … where an RFM score turns high (repeatable)"),
    ] = None,
    location_attribute: Annotated[
        str | None, typer.Option(help="Text attribute holding an address or lat,lon ('none')")
    ] = None,
    recompute_hours: Annotated[int | None, typer.Option(help="Recompute every N hours")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or change the lifecycle thresholds, RFM splits and location attribute."""
    from hongyan.audience import service
    from hongyan.audience.scoring import Splits, Thresholds
    from hongyan.errors import ValidationFailed

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        current = service.get_settings(conn, tenant_id)
        t = current.thresholds
        s = {"r": current.splits.r, "f": current.splits.f, "m": current.splits.m}
        for item in split or []:
            key, _, value = item.partition("=")
            if key not in s or not value:
                raise ValidationFailed(
                    "--split takes r|f|m=SCORE or =mean", "--split 格式为 r|f|m=分数 或 =mean"
                )
            try:
                s[key] = None if value == "mean" else float(value)
            except ValueError:
                raise ValidationFailed(
                    "--split takes r|f|m=SCORE or =mean", "--split 格式为 r|f|m=分数 或 =mean"
                ) from None
        location: str | bool | None = False
        if location_attribute is not None:
            location = None if location_attribute == "none" else location_attribute
        settings = service.update_settings(
            conn, runtime.clock, tenant_id,
            thresholds=Thresholds(
                new_days or t.new_days, active_days or t.active_days,
                dormant_days or t.dormant_days, lost_days or t.lost_days,
            ),
            splits=Splits(s["r"], s["f"], s["m"]),
            location_attribute=location, recompute_hours=recompute_hours,
        )  # fmt: skip
    body = settings.as_json()
    emit(body, as_json, json.dumps(body, ensure_ascii=False, indent=2, default=str))


@audience_app.command("recompute")
@reports_errors
def audience_recompute(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Recompute RFM scores, lifecycle stages and contact locations now."""
    from hongyan.audience import recompute

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    figures = recompute.recompute(runtime.engine, runtime.clock, tenant_id)
    emit(
        figures,
        as_json,
        f"[green]✓[/green] {figures['buyers']} buyers scored in "
        f"{figures['seconds']} s; {figures['locations']['located']} located",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(segments_app, name="segments")
    app.add_typer(stores_app, name="stores")
    app.add_typer(audience_app, name="audience")
    app.command("rfm")(reports_errors(rfm))
    app.command("lifecycle")(reports_errors(lifecycle))

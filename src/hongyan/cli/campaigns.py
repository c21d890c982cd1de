"""`hongyan campaigns`: create, estimate, launch, pause, resume, cancel, status, list, decide;
`hongyan caps`: the tenant's frequency caps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

campaigns_app = typer.Typer(
    help="Campaigns: create, estimate, launch, pause, resume, cancel, status", no_args_is_help=True
)
caps_app = typer.Typer(help="Frequency caps by lifecycle stage", no_args_is_help=True)
journeys_app = typer.Typer(
    help="Behaviour-triggered journeys: create, list, show, pause, resume", no_args_is_help=True
)

TenantOpt = Annotated[str, typer.Option(help="Tenant slug")]
CampaignArg = Annotated[str, typer.Argument(help="Campaign id or name")]
ACTOR = "cli"


def _tenant_id(runtime: Any, slug: str) -> int:
    from hongyan.tenants import service as tenants

    with runtime.engine.connect() as conn:
        return int(tenants.get_tenant(conn, slug).id)


def _ref(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _json_arg(text: str | None, what: str) -> Any:
    from hongyan.errors import ValidationFailed

    if text is None:
        return None
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"{what} is not valid JSON: {exc.msg}", f"{what} 不是有效的 JSON：{exc.msg}"
        ) from None


def _window(text: str | None) -> Any:
    """A preset name, or HH:MM-HH:MM."""
    if text is None:
        return None
    if "-" in text and ":" in text:
        start, end = text.split("-", 1)
        return {"start": start.strip(), "end": end.strip()}
    return text


def _line(c: dict[str, Any]) -> str:
    counts = c.get("counts") or {}
    return (
        f"{c['id']:>5}  {c['name']:<20} {c['state']:<10} {c.get('phase') or '':<5} "
        f"planned {counts.get('planned', 0)}"
    )


@campaigns_app.command("create")
@reports_errors
def create(
    tenant: TenantOpt,
    name: Annotated[str, typer.Option(help="Campaign name")],
    template: Annotated[
        list[str],
        typer.Option(help="A variant: TEMPLATE_ID[:WEIGHT] (repeat for 2–5 variants)"),
    ],
    segment: Annotated[str | None, typer.Option(help="Segment id or name")] = None,
    numbers: Annotated[
        Path | None, typer.Option("--list", help="A file of E.164 numbers, one a line")
    ] = None,
    category: Annotated[str, typer.Option(help="marketing or notification")] = "marketing",
    important: Annotated[
        bool, typer.Option(help="Reaches contacts who want important only")
    ] = False,
    at: Annotated[str | None, typer.Option(help="Send at (local time, ISO 8601)")] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help='Schedule as JSON: {"kind":"recurring","every":"month","day":18}'),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="A window preset or HH:MM-HH:MM (local time)")
    ] = None,
    on_window_end: Annotated[str, typer.Option(help="carry or expire")] = "carry",
    rate: Annotated[float | None, typer.Option(help="Messages a second to spread at")] = None,
    route: Annotated[str | None, typer.Option(help="Channel whose price and rate apply")] = None,
    link_url: Annotated[
        str | None,
        typer.Option(help="Where {link} leads (http(s)), for the templates that place {link}"),
    ] = None,
    coupon_pool: Annotated[
        int | None,
        typer.Option(
            help="The coupon pool's id ({coupon} codes come from it), for the templates that "
            "place {coupon} (`hongyan coupons list`)"
        ),
    ] = None,
    ab_share: Annotated[
        float | None, typer.Option(help="A/B test: each variant's share of the audience")
    ] = None,
    ab_metric: Annotated[str, typer.Option(help="delivery_rate, reply_rate, click_rate …")] = (
        "delivery_rate"
    ),
    ab_wait_hours: Annotated[float, typer.Option(help="Hours before the winner is chosen")] = 4,
    ab_method: Annotated[str, typer.Option(help="frequentist or bayesian")] = "frequentist",
    ab_confidence: Annotated[float, typer.Option(help="Confidence for the winner")] = 0.95,
    as_json: JsonOpt = False,
) -> None:
    """Create a draft campaign (nothing is sent until `launch`)."""
    from hongyan.campaigns import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    variants = []
    for spec in template:
        tid, _, weight = spec.partition(":")
        variants.append({"template_id": int(tid), "weight": int(weight or 1)})
    sched = _json_arg(schedule, "schedule") or ({"kind": "at", "at": at} if at else None)
    phones = None
    if numbers is not None:
        phones = [
            line.strip()
            for line in numbers.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    ab = (
        {
            "share": ab_share, "metric": ab_metric, "wait_hours": ab_wait_hours,
            "method": ab_method, "confidence": ab_confidence,
        }
        if ab_share
        else None
    )  # fmt: skip
    with runtime.engine.begin() as conn:
        camp = service.create(
            conn, runtime.clock, runtime.keyring, tenant_id, name=name, variants=variants,
            segment=_ref(segment) if segment else None, phones=phones, category=category,
            important=important, route=route, schedule=sched, window=_window(window),
            on_window_end=on_window_end, rate=rate, ab=ab, link_url=link_url,
            coupon_pool_id=coupon_pool, actor=ACTOR,
        )  # fmt: skip
    emit(camp, as_json, f"[green]✓[/green] campaign {camp['id']} {camp['name']} (draft)")


@campaigns_app.command("estimate")
@reports_errors
def estimate(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """Who it would reach now, the parts and the cost."""
    from hongyan.campaigns import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        est = service.estimate(conn, runtime.clock, tenant_id, _ref(campaign))
    text = (
        f"recipients {est['recipients']}  excluded {est['excluded']}\n"
        f"parts {est['parts']}  price/part {est['price_per_part']}  cost {est['cost']}"
    )
    emit(est, as_json, text)


def _act(action: str, tenant: str, campaign: str, as_json: bool, **kw: Any) -> None:
    from hongyan.campaigns import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    if action == "decide":
        camp = _decide(runtime, tenant_id, campaign, kw.get("winner"))
    else:
        fn = getattr(service, action)
        with runtime.engine.begin() as conn:
            if action == "launch":
                camp = fn(
                    conn, runtime.clock, runtime.keyring, tenant_id, _ref(campaign), actor=ACTOR
                )
            else:
                camp = fn(conn, runtime.clock, tenant_id, _ref(campaign), actor=ACTOR)
    counts = camp.get("counts") or {}
    extra = f"  moved {camp['moved']}" if "moved" in camp else ""
    emit(camp, as_json, f"[green]✓[/green] {camp['name']}: {camp['state']}{extra}  {counts}")


def _decide(runtime: Any, tenant_id: int, campaign: str, winner: str | None) -> dict[str, Any]:
    """The console's and the API's path, run in the foreground: the decision recorded (and
    committed), then the rest sent the winner; a failure leaves the test waiting with the
    error, which is reported."""
    from hongyan.campaigns import launching, service
    from hongyan.errors import HongyanError

    with runtime.engine.begin() as conn:
        camp = service.begin_decide(
            conn, runtime.clock, tenant_id, _ref(campaign), winner=winner, actor=ACTOR
        )
    if camp["state"] != "deciding":
        return camp  # no winner: the evidence is recorded
    done = launching.run(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, camp["id"], actor=ACTOR,
        kind="decide",
    )  # fmt: skip
    if done is not None:
        return done
    with runtime.engine.connect() as conn:
        note = (service.get(conn, tenant_id, camp["id"])["decision"] or {}).get("error") or {}
    message = note.get("message") or {}
    error = HongyanError(message.get("en"), message.get("zh"))
    error.code = str(note.get("code") or "campaign_decision_failed")
    raise error


@campaigns_app.command("launch")
@reports_errors
def launch(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """Launch a draft: materialise now, or schedule it for its time."""
    _act("launch", tenant, campaign, as_json)


@campaigns_app.command("pause")
@reports_errors
def pause(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """Hold every planned message of a running campaign."""
    _act("pause", tenant, campaign, as_json)


@campaigns_app.command("resume")
@reports_errors
def resume(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """Plan the held messages again."""
    _act("resume", tenant, campaign, as_json)


@campaigns_app.command("cancel")
@reports_errors
def cancel(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """Cancel every message not yet sent, and the campaign."""
    _act("cancel", tenant, campaign, as_json)


@campaigns_app.command("decide")
@reports_errors
def decide(
    tenant: TenantOpt,
    campaign: CampaignArg,
    winner: Annotated[str | None, typer.Option(help="Choose the winner yourself (A, B …)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide an A/B test now (by its test, or your choice) and send the rest the winner."""
    _act("decide", tenant, campaign, as_json, winner=winner)


@campaigns_app.command("status")
@reports_errors
def status(tenant: TenantOpt, campaign: CampaignArg, as_json: JsonOpt = False) -> None:
    """The campaign's messages by variant and state, its funnel and cost."""
    from hongyan.campaigns import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        st = service.status(conn, runtime.clock, tenant_id, _ref(campaign))
    lines = [_line(st), f"messages {st['messages']}  cost {st['cost']}"]
    for f in st["funnel"]:
        rate = f"{f['delivery_rate']:.1%}" if f["delivery_rate"] is not None else "—"
        lines.append(
            f"  {f['variant']}: planned {f['planned']} waiting {f['waiting']} "
            f"delivered {f['delivered']} ({rate})"
        )
    if st.get("decision") and st["decision"].get("reason"):
        lines.append(f"A/B: {st['decision']['reason']['zh']}")
    emit(st, as_json, "\n".join(lines))


@campaigns_app.command("list")
@reports_errors
def list_(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's campaigns, newest first."""
    from hongyan.campaigns import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        rows = service.list_campaigns(conn, tenant_id)
    emit({"campaigns": rows}, as_json, "\n".join(_line(r) for r in rows) or "(none)")


@campaigns_app.command("tick")
@reports_errors
def tick(as_json: JsonOpt = False) -> None:
    """Run the scheduler once (launch due campaigns, decide A/B tests, complete finished ones,
    enrol and advance journeys)."""
    from hongyan.campaigns import service

    runtime = open_runtime()
    from hongyan.campaigns import journeys

    done = service.tick(runtime.engine, runtime.clock, runtime.keyring)
    done.update(
        {
            f"journeys.{k}": v
            for k, v in journeys.tick(runtime.engine, runtime.clock, runtime.keyring).items()
        }
    )
    emit(done, as_json, str(done or "nothing due"))


@caps_app.command("show")
@reports_errors
def caps_show(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The frequency caps: [messages, days] by lifecycle stage."""
    from hongyan.campaigns import caps

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        policy = caps.get_policy(conn, tenant_id).as_json()
    emit(policy, as_json, "\n".join(f"{k:<9} {n} / {d} days" for k, (n, d) in policy.items()))


@caps_app.command("set")
@reports_errors
def caps_set(
    tenant: TenantOpt,
    limits: Annotated[str, typer.Argument(help='JSON: {"new": [1, 7], "default": [3, 30]}')],
    as_json: JsonOpt = False,
) -> None:
    """Change the caps of the stages named (the others keep theirs)."""
    from hongyan.campaigns import caps

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        current = caps.get_policy(conn, tenant_id).as_json()
        policy = caps.set_policy(
            conn, runtime.clock, tenant_id, {**current, **_json_arg(limits, "limits")}
        )
    emit(policy.as_json(), as_json, "[green]✓[/green]")


@campaigns_app.command("preference-link")
@reports_errors
def preference_link(
    tenant: TenantOpt,
    phone: Annotated[str, typer.Option(help="The contact's number (E.164)")],
    as_json: JsonOpt = False,
) -> None:
    """The contact's preference page link (how often they want marketing)."""
    from hongyan.campaigns import preferences
    from hongyan.contacts import service as contacts
    from hongyan.errors import NotFound

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        contact_id = contacts.find_id(conn, runtime.keyring, tenant_id, phone)
    if contact_id is None:
        raise NotFound("No such contact", "找不到该联系人")
    base = runtime.settings.public_url or "http://127.0.0.1:8000"
    url = preferences.link(base, runtime.settings.session_secret, tenant_id, contact_id)
    emit({"url": url}, as_json, url)


@journeys_app.command("create")
@reports_errors
def journey_create(
    tenant: TenantOpt,
    name: Annotated[str, typer.Option(help="Journey name")],
    trigger: Annotated[
        str, typer.Option(help="Event kind (add_to_cart, registration …) or birthday")
    ],
    steps: Annotated[
        str,
        typer.Option(
            help='Steps as JSON: [{"kind":"wait","minutes":60},{"kind":"send","template_id":3,'
            '"link_url":"https://shop.example/p","coupon_pool_id":2}] (link_url for a template '
            "with {link}, coupon_pool_id for one with {coupon})"
        ),
    ],
    exit_on: Annotated[str, typer.Option(help="Event that ends it (order), or none")] = "order",
    as_json: JsonOpt = False,
) -> None:
    """Create an active journey."""
    from hongyan.campaigns import journeys

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        j = journeys.create(
            conn, runtime.clock, tenant_id, name=name, trigger=trigger,
            steps=_json_arg(steps, "steps"), exit_on=None if exit_on == "none" else exit_on,
            actor=ACTOR,
        )  # fmt: skip
    emit(j, as_json, f"[green]✓[/green] journey {j['id']} {j['name']}")


@journeys_app.command("list")
@reports_errors
def journey_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's journeys with their counts."""
    from hongyan.campaigns import journeys

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        rows = journeys.list_journeys(conn, tenant_id)
    lines = [
        f"{j['id']:>4}  {j['name']:<16} {j['trigger']:<12} {j['state']:<7} {j['counts']}"
        for j in rows
    ]
    emit({"journeys": rows}, as_json, "\n".join(lines) or "(none)")


@journeys_app.command("show")
@reports_errors
def journey_show(
    tenant: TenantOpt,
    journey: Annotated[str, typer.Argument(help="Journey id or name")],
    as_json: JsonOpt = False,
) -> None:
    """A journey, its steps and counts."""
    from hongyan.campaigns import journeys

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        j = journeys.get(conn, tenant_id, _ref(journey))
    emit(j, as_json, f"{j['name']} ({j['state']}): {j['counts']}")


def _journey_state(tenant: str, journey: str, state: str, as_json: bool) -> None:
    from hongyan.campaigns import journeys

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        j = journeys.set_state(conn, runtime.clock, tenant_id, _ref(journey), state, actor=ACTOR)
    emit(j, as_json, f"[green]✓[/green] {j['name']}: {j['state']}")


@journeys_app.command("pause")
@reports_errors
def journey_pause(
    tenant: TenantOpt, journey: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Stop enrolling and advancing (enrolments wait where they are)."""
    _journey_state(tenant, journey, "paused", as_json)


@journeys_app.command("resume")
@reports_errors
def journey_resume(
    tenant: TenantOpt, journey: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Enrol and advance again."""
    _journey_state(tenant, journey, "active", as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(campaigns_app, name="campaigns")
    app.add_typer(caps_app, name="caps")
    app.add_typer(journeys_app, name="journeys")

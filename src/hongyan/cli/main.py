"""`hongyan`: the command line. One command group per capability; `--json` on every report."""

from __future__ import annotations

import contextlib
import functools
import getpass
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from hongyan.cli.output import emit, fail, note
from hongyan.errors import HongyanError
from hongyan.logs import configure as configure_logs
from hongyan.runtime import Runtime, settle_heap
from hongyan.security.roles import Role
from hongyan.settings import Settings, get_settings

app = typer.Typer(help="鸿雁 hongyan: SMS marketing platform", no_args_is_help=True)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants (businesses on the platform)", no_args_is_help=True)
user_app = typer.Typer(help="Console users", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys", no_args_is_help=True)
keys_app = typer.Typer(help="The key ring that encrypts phone numbers", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(apikey_app, name="apikey")
app.add_typer(keys_app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object")]
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn typed errors into a clear message (or a JSON error object) and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HongyanError as exc:
            fail(exc, bool(kwargs.get("as_json")))

    return wrapper  # type: ignore[return-value]


def open_runtime(settings: Settings | None = None, *, need_schema: bool = True) -> Runtime:
    """The runtime for a command; refuses early when the schema is behind the code."""
    from hongyan.db.migrate import require_migrated

    settings = settings or get_settings()
    runtime = Runtime.create(settings, generate_secrets=settings.env != "production")
    for message in runtime.notes:
        note(message)
    if need_schema:
        require_migrated(runtime.engine)
    return runtime


@db_app.command("upgrade")
@reports_errors
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create or migrate the schema to the newest revision."""
    from hongyan.db import migrate

    runtime = open_runtime(need_schema=False)
    revision = migrate.upgrade(runtime.engine)
    emit(
        {"revision": revision, "database": runtime.engine.dialect.name},
        as_json,
        f"[green]✓[/green] schema at revision {revision} ({runtime.engine.dialect.name})",
    )


@tenant_app.command("create")
@reports_errors
def tenant_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Display name, e.g. 鸿雁茶饮")],
    signature: Annotated[
        str | None, typer.Option(help="Approved signature, e.g. 【鸿雁茶饮】")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone")] = "Asia/Shanghai",
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant with its policy and, optionally, an approved signature."""
    from hongyan.security import audit
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        tenant = service.create_tenant(
            conn, runtime.clock, slug=slug, name=name, signature=signature, timezone=timezone
        )
        audit.record(
            conn,
            runtime.clock,
            tenant_id=tenant.id,
            actor="cli",
            action="tenant.create",
            target=f"tenant:{tenant.slug}",
        )
    emit(
        {
            "id": tenant.id,
            "slug": tenant.slug,
            "name": tenant.name,
            "timezone": tenant.timezone,
            "signature": signature,
        },
        as_json,
        f"[green]✓[/green] tenant {tenant.slug} ({tenant.name}) created, id {tenant.id}",
    )


@tenant_app.command("list")
@reports_errors
def tenant_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        items = service.list_tenants(conn)
    rows = [t.__dict__ for t in items]
    emit(
        {"tenants": rows},
        as_json,
        "\n".join(f"{t.id:>4}  {t.slug:<20} {t.name}  ({t.timezone})" for t in items)
        or "no tenants",
    )


@user_app.command("create")
@reports_errors
def user_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    email: Annotated[str, typer.Option()],
    role: Annotated[Role, typer.Option()] = Role.OWNER,
    name: Annotated[str, typer.Option()] = "",
    password: Annotated[
        str | None,
        typer.Option(help="Omit to be asked (input hidden)", envvar="HONGYAN_NEW_PASSWORD"),
    ] = None,
    phone: Annotated[str | None, typer.Option(help="Mobile, stored encrypted")] = None,
    locale: Annotated[str, typer.Option()] = "zh-CN",
    as_json: JsonOpt = False,
) -> None:
    """Add a console user to a tenant."""
    from hongyan.security import audit
    from hongyan.tenants import service

    if password is None:
        password = getpass.getpass("Password (10+ characters): ")
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, tenant)
        user = service.create_user(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id=t.id,
            email=email,
            name=name,
            role=role,
            password=password,
            phone=phone,
            locale=locale,
        )
        audit.record(
            conn,
            runtime.clock,
            tenant_id=t.id,
            actor="cli",
            action="user.create",
            target=f"user:{user.id}",
            detail={"role": user.role.value},
        )
    emit(
        {"id": user.id, "tenant": t.slug, "email": user.email, "role": user.role.value},
        as_json,
        f"[green]✓[/green] user {user.email} ({user.role.value}) added to {t.slug}",
    )


@apikey_app.command("create")
@reports_errors
def apikey_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    name: Annotated[str, typer.Option(help="What the key is for")],
    role: Annotated[Role, typer.Option()] = Role.OPERATOR,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; the key is printed once and cannot be shown again."""
    from hongyan.security import apikeys, audit
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, tenant)
        new = apikeys.create(conn, runtime.clock, t.id, name, role)
        audit.record(
            conn,
            runtime.clock,
            tenant_id=t.id,
            actor="cli",
            action="apikey.create",
            target=f"apikey:{new.id}",
            detail={"name": name, "role": new.role.value},
        )
    emit(
        {"id": new.id, "tenant": t.slug, "name": new.name, "role": new.role.value, "key": new.key},
        as_json,
        f"[green]✓[/green] API key {new.id} for {t.slug}:\n  {new.key}\n"
        "[yellow]Store it now: it will not be shown again.[/yellow]",
    )


@keys_app.command("rotate")
@reports_errors
def keys_rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt every stored phone number under the active key (HONGYAN_ACTIVE_KEY)."""
    from rich.progress import Progress

    from hongyan.security.rotation import rotate

    runtime = open_runtime()
    if as_json:
        report = rotate(runtime.engine, runtime.keyring, batch_size=batch_size)
    else:
        with Progress(transient=True) as bar:
            task = bar.add_task("re-encrypting", total=None)
            report = rotate(
                runtime.engine,
                runtime.keyring,
                batch_size=batch_size,
                progress=lambda _c, n: bar.update(task, completed=n),
            )
    emit(
        report.__dict__,
        as_json,
        f"[green]✓[/green] {report.rotated} ciphertexts moved to key {report.active_key} "
        f"({report.scanned} scanned, {report.skipped_changed} changed meanwhile)",
    )


@keys_app.command("generate")
def keys_generate(as_json: JsonOpt = False) -> None:
    """Print a new random 256-bit key for HONGYAN_DATA_KEYS."""
    from hongyan.security.keyring import KeyRing

    key = KeyRing.generate_key()
    emit({"key": key}, as_json, key)


messages_app = typer.Typer(help="Messages in the outbox", no_args_is_help=True)
app.add_typer(messages_app, name="messages")
FINAL_STATES = {"delivered", "undelivered", "expired", "failed", "cancelled"}


def _message_view(runtime: Runtime, tenant_id: int, message_id: int) -> dict[str, Any]:
    from hongyan.dispatch import outbox

    with runtime.engine.connect() as conn:
        m = outbox.get(conn, tenant_id, message_id)
    view = {k: v for k, v in m.items() if k != "dest_masked"}
    view["to"] = m["dest_masked"]
    return view


@app.command()
@reports_errors
def send(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    to: Annotated[str, typer.Option(help="E.164 number, e.g. +8613812345678")],
    text: Annotated[
        str | None, typer.Option(help="The whole text, signature included (not marketing)")
    ] = None,
    template_id: Annotated[
        int | None, typer.Option(help="Instead of --text: a stored template's approved version")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="name=value for the template; repeatable")
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="verification, notification or marketing")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a final state")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Queue one message; with --wait, follow it until a dispatcher has settled it."""
    import time

    from hongyan.dispatch import outbox
    from hongyan.dispatch.states import lane_for
    from hongyan.errors import ValidationFailed
    from hongyan.tenants import service

    if (text is None) == (template_id is None):
        raise ValidationFailed(
            "Give --text or --template-id", "请提供 --text 或 --template-id 之一"
        )
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, tenant)
        policy = service.policy_of(conn, t.id)
        version_id: int | None = None
        if template_id is not None:  # content: send with the template's approved version
            from hongyan.content import sending

            stored = sending.sendable(conn, t.id, template_id)
            params = dict(p.split("=", 1) for p in param or [] if "=" in p)
            text = sending.render(conn, t.id, stored, params, max_parts=policy["max_parts"]).text
            version_id = stored.version_id
            category = category or stored.category
        try:
            lane = lane_for(category or "notification")
        except ValueError as exc:
            raise ValidationFailed(
                f"Unknown category {category!r}", f"未知类别 {category!r}"
            ) from exc
        mid, created = outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            t.id,
            outbox.NewMessage(
                to.strip(),
                text or "",
                lane=lane,
                source="cli",
                idempotency_key=idempotency_key,
                template_version_id=version_id,
            ),
            max_parts=policy["max_parts"],
        )
    view = _message_view(runtime, t.id, mid)
    deadline = time.monotonic() + timeout
    while wait and view["state"] not in FINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.25)
        view = _message_view(runtime, t.id, mid)
    view["created"] = created
    emit(
        view,
        as_json,
        f"message {mid} to {view['to']}: [bold]{view['state']}[/bold]"
        + (f" ({view['reason']})" if view.get("reason") else ""),
    )


@messages_app.command("show")
@reports_errors
def messages_show(
    message_id: int,
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    as_json: JsonOpt = False,
) -> None:
    """One message as its tenant sees it (number masked)."""
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = service.get_tenant(conn, tenant)
    view = _message_view(runtime, t.id, message_id)
    emit(view, as_json, "\n".join(f"{k:>14}: {v}" for k, v in view.items()))


def _dispatcher_jobs(runtime: Runtime) -> list[Any]:
    """The dispatcher to run inside the server, unless HONGYAN_RUN_DISPATCHER=false."""
    from hongyan.dispatch import service

    if not runtime.settings.run_dispatcher:
        return []
    return [lambda stop: service.run(runtime, stop), *_webhook_jobs(runtime)]


def _webhook_jobs(runtime: Runtime) -> list[Any]:
    """The webhook worker, which runs wherever a dispatcher runs (with the audience scheduler,
    which recomputes RFM, lifecycle and locations when they are due, and the campaign scheduler,
    which launches due campaigns, decides A/B tests and advances journeys)."""
    from hongyan.audience import recompute
    from hongyan.campaigns import service as campaigns
    from hongyan.webhooks import delivery

    return [
        lambda stop: delivery.run(runtime, stop),
        lambda stop: recompute.run_schedule(runtime.engine, runtime.clock, stop),
        lambda stop: campaigns.run_schedule(runtime.engine, runtime.clock, runtime.keyring, stop),
    ]


@app.command()
@reports_errors
def dispatcher() -> None:
    """Run one dispatcher on the configured channels (any number may run on one PostgreSQL).

    Channels come from `hongyan channels add` (and HONGYAN_SMPP_URL, when set).
    """
    import asyncio
    import signal

    from hongyan.dispatch import service

    runtime = open_runtime()
    if runtime.settings.smpp_url:
        service.parse_smpp_url(runtime.settings.smpp_url)  # a bad URL is an error now
    configure_logs()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.gather(service.run(runtime, stop), *(j(stop) for j in _webhook_jobs(runtime)))

    settle_heap()
    asyncio.run(main())


def _command_status(value: str | int) -> int:
    """An SMPP command_status as decimal or 0x-hex (0x45 = ESME_RSUBMITFAIL)."""
    if isinstance(value, int):  # the default
        return value
    try:
        return int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"not a number: {value!r} (e.g. 8 or 0x45)") from None


@app.command()
@reports_errors
def sandbox(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 2775,
    system_id: Annotated[str, typer.Option(help="Account the platform binds with")] = "hongyan",
    # A simulated carrier on loopback: a well-known default credential is the point.
    password: Annotated[str, typer.Option(envvar="HONGYAN_SANDBOX_PASSWORD")] = "sandbox",  # noqa: S107
    receipt_delay: Annotated[float, typer.Option(help="Seconds before a receipt")] = 1.0,
    delivered: Annotated[float, typer.Option(help="Weight of DELIVRD outcomes")] = 0.92,
    undeliverable: Annotated[float, typer.Option(help="Weight of UNDELIV outcomes")] = 0.04,
    expired: Annotated[float, typer.Option(help="Weight of EXPIRED outcomes")] = 0.02,
    rejected: Annotated[float, typer.Option(help="Weight of REJECTD outcomes")] = 0.01,
    no_receipt: Annotated[float, typer.Option(help="Weight of no receipt at all")] = 0.01,
    invalid: Annotated[
        list[str] | None, typer.Option(help="A number (digits, no +) that is 空号; repeatable")
    ] = None,
    throttle: Annotated[
        float | None, typer.Option(help="Submits per second before THROTTLED")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    drop_every: Annotated[
        int, typer.Option(help="Abort a connection on every Nth PDU received on it (0: off)")
    ] = 0,
    late_rate: Annotated[float, typer.Option(help="Fraction of submits answered late")] = 0.0,
    late_delay: Annotated[float, typer.Option(help="Seconds a late answer waits")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of submits refused")] = 0.0,
    error_status: Annotated[
        int,
        typer.Option(
            parser=_command_status, help="command_status of a refusal (8, 0x14, 0x45, ...)"
        ),
    ] = 0x08,
    malformed_every: Annotated[
        int, typer.Option(help="Write a malformed PDU after every Nth submit (0: off)")
    ] = 0,
    malformed_kind: Annotated[
        str, typer.Option(help="length (bad command_length) or body (bad deliver_sm body)")
    ] = "length",
    reply_rate: Annotated[
        float, typer.Option(help="Probability a recipient replies to a delivered message")
    ] = 0.0,
    reply_text: Annotated[
        list[str] | None, typer.Option(help="A reply recipients may send; repeatable")
    ] = None,
    reply_delay: Annotated[float, typer.Option(help="Seconds from receipt to reply")] = 0.0,
    record: Annotated[
        str | None, typer.Option(help="Append what the carrier received to this JSON-lines file")
    ] = None,
    shop_url: Annotated[
        str | None,
        typer.Option(help="Shoppers: the platform's URL (short links are fetched, orders posted)"),
    ] = None,
    shop_api_key: Annotated[
        str | None, typer.Option(envvar="HONGYAN_SHOP_API_KEY", help="Shoppers: an API key")
    ] = None,
    shop_rule: Annotated[
        list[str] | None,
        typer.Option(
            help="Shoppers: TEXT:CLICK:BUY rates for messages containing TEXT; repeatable"
        ),
    ] = None,
    click_rate: Annotated[float, typer.Option(help="Shoppers: default click rate")] = 0.0,
    buy_rate: Annotated[float, typer.Option(help="Shoppers: default buy rate (of clickers)")] = 0.0,
) -> None:
    """Run the carrier sandbox: a real SMPP 3.4 SMSC for the demo, tests and benchmarks."""
    import asyncio

    from hongyan.channels.sandbox.shoppers import ShopperConfig, parse_rule
    from hongyan.channels.sandbox.smsc import DEFAULT_REPLY_TEXTS, SandboxConfig, SandboxSmsc

    shoppers = None
    if shop_url:
        if not shop_api_key:
            raise typer.BadParameter("--shop-url needs --shop-api-key (an operator key)")
        try:
            rules = tuple(parse_rule(r) for r in shop_rule or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        shoppers = ShopperConfig(
            base_url=shop_url,
            api_key=shop_api_key,
            rules=rules,
            click=click_rate,
            buy=buy_rate,
            seed=seed,
        )

    config = SandboxConfig(
        host=host,
        port=port,
        credentials={system_id: password},
        receipt_delay=receipt_delay,
        delivered=delivered,
        undeliverable=undeliverable,
        expired=expired,
        rejected=rejected,
        no_receipt=no_receipt,
        invalid_numbers=set(invalid or []),
        throttle_per_second=throttle,
        seed=seed,
        drop_every=drop_every,
        late_rate=late_rate,
        late_delay=late_delay,
        error_rate=error_rate,
        error_status=error_status,
        malformed_every=malformed_every,
        malformed_kind=malformed_kind,  # type: ignore[arg-type]  # validated by the config
        reply_rate=reply_rate,
        reply_texts=tuple(reply_text) if reply_text else DEFAULT_REPLY_TEXTS,
        reply_delay=reply_delay,
        record_path=record,
        shoppers=shoppers,
    )

    async def main() -> None:
        smsc = SandboxSmsc(config)
        bound_host, bound_port = await smsc.start()
        note(f"sandbox SMSC listening on {bound_host}:{bound_port} (system_id {system_id})")
        if record:
            note(f"recording what it receives in {record}")
        try:
            await asyncio.Event().wait()
        finally:
            await smsc.stop()

    configure_logs()
    with contextlib.suppress(KeyboardInterrupt):
        settle_heap()
        asyncio.run(main())


@app.command()
@reports_errors
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the API and the console."""
    import uvicorn

    from hongyan.api.app import create_app

    runtime = open_runtime()
    configure_logs()
    app_ = create_app(runtime, _dispatcher_jobs(runtime))
    settle_heap()
    uvicorn.run(
        app_,
        host=host or runtime.settings.host,
        port=port or runtime.settings.port,
        log_config=None,
    )


@app.command()
@reports_errors
def demo(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare only")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Migrate, create the demo tenant and its owner login, and serve the platform."""
    from hongyan.demo import prepare

    runtime = open_runtime(need_schema=False)
    info = prepare(runtime)
    host = host or runtime.settings.host
    port = port or runtime.settings.port
    url = f"http://{host}:{port}/login"
    emit(
        {**info, "url": url},
        as_json,
        "\n[bold]鸿雁 hongyan demo[/bold]\n"
        f"  console:  [cyan]{url}[/cyan]\n"
        f"  login:    {info['email']}\n"
        f"  password: {info['password']}\n"
        f"  API key:  {info['api_key_note']}\n"
        f"  review:   [cyan]http://{host}:{port}/staff/login[/cyan] as {info['reviewer_email']} "
        "(same password)\n",
    )
    if not no_serve:
        import uvicorn

        from hongyan.api.app import create_app
        from hongyan.demo import sandbox_jobs

        configure_logs(logging.WARNING)
        jobs = [*sandbox_jobs(runtime, f"http://{host}:{port}"), *_webhook_jobs(runtime)]
        demo_app = create_app(runtime, jobs)
        settle_heap()
        uvicorn.run(demo_app, host=host, port=port, log_config=None)


@tenant_app.command("ext")
@reports_errors
def tenant_ext(
    slug: str,
    code: Annotated[str, typer.Argument(help="1-8 digits; 'none' to clear")],
    as_json: JsonOpt = False,
) -> None:
    """Set a tenant's extension code (扩展码): its sender number suffix, how replies find it."""
    from hongyan.tenants import service

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = service.get_tenant(conn, slug)
        service.set_sms_ext(conn, t.id, None if code == "none" else code)
    emit({"tenant": slug, "sms_ext": None if code == "none" else code}, as_json, "[green]✓[/green]")


def _register_groups() -> None:
    from hongyan.cli.channels import channels_app, routes_app, suppressions_app

    app.add_typer(channels_app, name="channels")
    app.add_typer(routes_app, name="routes")
    app.add_typer(suppressions_app, name="suppressions")
    from hongyan.cli.webhooks import webhooks_app

    app.add_typer(webhooks_app, name="webhooks")
    from hongyan.cli.calendar import calendar_app

    app.add_typer(calendar_app, name="calendar")
    # content: lint, templates, signatures, words, tenant policy; platform staff and review
    from hongyan.cli import content

    content.register(app, tenant_app)


_register_groups()

__all__ = ["app"]


def _register_contacts() -> None:
    from hongyan.cli.contacts import contacts_app, events_app, retention_app

    app.add_typer(contacts_app, name="contacts")
    app.add_typer(events_app, name="events")
    app.add_typer(retention_app, name="retention")


_register_contacts()


def _register_audiences() -> None:
    from hongyan.cli.segments import register  # segments, rfm, lifecycle, stores (issue 6)

    register(app)


_register_audiences()


def _register_tracking() -> None:
    from hongyan.cli.tracking import register  # redirector, coupons, links, report (issue 8)

    register(app)


def _register_campaigns() -> None:
    from hongyan.cli.campaigns import register  # campaigns, caps, journeys (issue 7)

    register(app)


_register_tracking()
_register_campaigns()

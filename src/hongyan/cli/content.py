"""`hongyan lint`, `templates`, `signatures`, `words`, `tenant policy`; `staff` and `review`."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

templates_app = typer.Typer(help="Templates: write, submit for review, send", no_args_is_help=True)
signatures_app = typer.Typer(help="Signatures (【品牌名】) and their review", no_args_is_help=True)
words_app = typer.Typer(
    help="A tenant's own words and exceptions for the lint", no_args_is_help=True
)
staff_app = typer.Typer(
    help="Platform staff (reviewers), members of no tenant", no_args_is_help=True
)
review_app = typer.Typer(help="The platform's review queue", no_args_is_help=True)

TenantOpt = Annotated[str, typer.Option(help="Tenant slug")]
CategoryOpt = Annotated[str, typer.Option(help="verification, notification or marketing")]
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}
CLI_ACTOR = "cli"


def _text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _findings_text(result: dict[str, Any]) -> str:
    lines = [
        f"{'[green]✓ ok[/green]' if result['ok'] else '[red]✗ not ok[/red]'}  "
        f"{result['encoding']}  {result['chars']} 字  {result['parts']} 条"
        + (f" (up to {result['parts_max']})" if result["parts_max"] > result["parts"] else "")
    ]
    for f in result["findings"]:
        style = SEVERITY_STYLE.get(f["severity"], "white")
        span = result["text"][f["start"] : f["end"]]
        where = f" «{span}»" if span else f" @{f['start']}"
        lines.append(
            f"  [{style}]{f['severity']:<7}[/{style}] {f['rule']:<22}{where}  {f['message']['zh']}"
        )
        if f["suggestion"]:
            lines.append(f"  {'':<30}→ {f['suggestion']['zh']}")
    return "\n".join(lines)


@reports_errors
def lint(
    text: Annotated[str, typer.Argument(help="The text (placeholders allowed); - reads stdin")],
    tenant: TenantOpt,
    category: CategoryOpt = "marketing",
    fix: Annotated[bool, typer.Option("--fix", help="Apply the safe fixes, lint again")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a text for compliance; exit code 1 when it has errors."""
    from hongyan.content import service
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        result = service.run(conn, t.id, category, _text(text), apply_fixes=fix)
    out = _findings_text(result)
    if fix:
        out = f"{result['text']}\n{out}"
    emit(result, as_json, out)
    if not result["ok"]:
        raise typer.Exit(code=1)


# -- templates --------------------------------------------------------------------------------


def _template_line(t: dict[str, Any]) -> str:
    live = f"  live v{t.get('live_version')}" if t.get("live_version") else ""
    return f"{t['id']:>4}  {t['name']:<16} {t['category']:<12} v{t['version']} {t['status']}{live}"


@templates_app.command("list")
@reports_errors
def templates_list(
    tenant: TenantOpt,
    category: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's templates, newest version of each."""
    from hongyan.content import templates
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        items = templates.listing(conn, t.id, category=category)
    lines = [
        f"{i['id']:>4}  {i['name']:<16} {i['category']:<12} v{i['version']} {i['status']}"
        for i in items
    ]
    emit({"tenant": tenant, "templates": items}, as_json, "\n".join(lines) or "no templates")


@templates_app.command("show")
@reports_errors
def templates_show(template_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """A template with every version."""
    from hongyan.content import templates
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = templates.get(conn, t.id, template_id)
    lines = [_template_line(item)]
    for v in item["versions"]:
        reason = f"  ({v['reason']})" if v["reason"] else ""
        lines.append(f"   v{v['version']} {v['status']:<9}{reason}\n      {v['body']}")
    emit(item, as_json, "\n".join(lines))


@templates_app.command("create")
@reports_errors
def templates_create(
    tenant: TenantOpt,
    name: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option(help="The text; - reads stdin")],
    category: CategoryOpt = "marketing",
    link_url: Annotated[str | None, typer.Option(help="Where {link} leads")] = None,
    submit: Annotated[bool, typer.Option("--submit", help="Submit it for review at once")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a template (a draft), and with --submit send it for review."""
    from hongyan.content import service, templates
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = templates.create(
            conn,
            runtime.clock,
            t.id,
            name=name,
            category=category,
            body=_text(body),
            link_url=link_url,
            actor=CLI_ACTOR,
        )
        if submit:
            ctx = service.context(conn, t.id, category)
            item = templates.submit(conn, runtime.clock, t.id, item["id"], ctx, actor=CLI_ACTOR)
    emit(item, as_json, f"[green]✓[/green] {_template_line(item)}")


@templates_app.command("edit")
@reports_errors
def templates_edit(
    template_id: int,
    tenant: TenantOpt,
    body: Annotated[str | None, typer.Option(help="The new text; - reads stdin")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    link_url: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a template: the draft in place, else a new draft version."""
    from hongyan.content import templates
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = templates.update(
            conn,
            runtime.clock,
            t.id,
            template_id,
            name=name,
            body=_text(body) if body is not None else None,
            link_url=link_url,
            actor=CLI_ACTOR,
        )
    emit(item, as_json, f"[green]✓[/green] {_template_line(item)}")


def _template_action(action: str, template_id: int, tenant: str, as_json: bool) -> None:
    from hongyan.content import service, templates
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        if action == "submit":
            category = templates.get(conn, t.id, template_id)["category"]
            ctx = service.context(conn, t.id, category)
            item = templates.submit(conn, runtime.clock, t.id, template_id, ctx, actor=CLI_ACTOR)
        elif action == "withdraw":
            item = templates.withdraw(conn, runtime.clock, t.id, template_id, actor=CLI_ACTOR)
        else:
            item = templates.archive(conn, runtime.clock, t.id, template_id, actor=CLI_ACTOR)
    emit(item, as_json, f"[green]✓[/green] {_template_line(item)}")


@templates_app.command("submit")
@reports_errors
def templates_submit(template_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Submit the draft for review (refused while the lint finds errors)."""
    _template_action("submit", template_id, tenant, as_json)


@templates_app.command("withdraw")
@reports_errors
def templates_withdraw(template_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Take a version under review back to draft."""
    _template_action("withdraw", template_id, tenant, as_json)


@templates_app.command("archive")
@reports_errors
def templates_archive(template_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Retire a template (it no longer sends)."""
    _template_action("archive", template_id, tenant, as_json)


# -- signatures ---------------------------------------------------------------------------------


@signatures_app.command("list")
@reports_errors
def signatures_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's signatures and their review state."""
    from hongyan.content import signatures
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        items = signatures.listing(conn, t.id)
    lines = [
        f"{s['id']:>4}  {s['text']:<14} {s['status']:<9}{' default' if s['is_default'] else ''}"
        + (f"  ({s['reason']})" if s["reason"] else "")
        for s in items
    ]
    emit({"tenant": tenant, "signatures": items}, as_json, "\n".join(lines) or "no signatures")


@signatures_app.command("submit")
@reports_errors
def signatures_submit(
    text: Annotated[str, typer.Argument(help="【品牌名】")],
    tenant: TenantOpt,
    note: Annotated[str, typer.Option(help="For the reviewer: whose brand, which documents")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Submit a signature for review."""
    from hongyan.content import signatures
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = signatures.submit(conn, runtime.clock, t.id, text, note=note, actor=CLI_ACTOR)
    emit(item, as_json, f"[green]✓[/green] {item['text']} {item['status']}")


@signatures_app.command("default")
@reports_errors
def signatures_default(signature_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Make an approved signature the default."""
    from hongyan.content import signatures
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = signatures.set_default(conn, runtime.clock, t.id, signature_id, actor=CLI_ACTOR)
    emit(item, as_json, f"[green]✓[/green] {item['text']} is the default")


# -- words ------------------------------------------------------------------------------------


@words_app.command("list")
@reports_errors
def words_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's words (on top of the platform's lists)."""
    from hongyan.content import service
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        t = tenants.get_tenant(conn, tenant)
        items = service.words(conn, t.id)
    lines = [
        f"{w['id']:>4}  {w['list']:<10} {w['term']}"
        + (f" → {w['replacement']}" if w["replacement"] else "")
        for w in items
    ]
    emit({"tenant": tenant, "words": items}, as_json, "\n".join(lines) or "no words")


@words_app.command("add")
@reports_errors
def words_add(
    term: str,
    tenant: TenantOpt,
    list_: Annotated[
        str, typer.Option("--list", help="sensitive, absolute, forbidden, vague or exception")
    ] = "sensitive",
    replacement: Annotated[str | None, typer.Option(help="For a sensitive word")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a word (or an exception) to the tenant's lists."""
    from hongyan.content import service
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        item = service.add_word(
            conn,
            runtime.clock,
            t.id,
            list_=list_,
            term=term,
            replacement=replacement,
            actor=CLI_ACTOR,
        )
    emit(item, as_json, f"[green]✓[/green] {item['term']} added to {item['list']}")


@words_app.command("remove")
@reports_errors
def words_remove(word_id: int, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Remove one of the tenant's words."""
    from hongyan.content import service
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, tenant)
        service.remove_word(conn, runtime.clock, t.id, word_id, actor=CLI_ACTOR)
    emit({"removed": word_id}, as_json, "[green]✓[/green] removed")


# -- the tenant's policy ------------------------------------------------------------------------


def tenant_policy(
    slug: str,
    marketing: Annotated[
        bool | None, typer.Option("--marketing/--notifications-only", help="May send marketing")
    ] = None,
    ad_mark: Annotated[
        bool | None, typer.Option("--ad-mark/--no-ad-mark", help="Marketing needs 广告 marked")
    ] = None,
    ad_mark_text: Annotated[str | None, typer.Option(help="The mark the fix inserts")] = None,
    unsubscribe_text: Annotated[
        str | None, typer.Option(help="The opt-out the fix appends, e.g. 拒收请回复R")
    ] = None,
    max_parts: Annotated[int | None, typer.Option(min=1, max=10)] = None,
    notification_templates: Annotated[
        bool | None,
        typer.Option(
            "--notification-templates/--free-notifications",
            help="Notifications need approved templates too",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or change a tenant's policy (what the lint and the outbox gate enforce)."""
    from hongyan.security import audit
    from hongyan.tenants import service as tenants

    runtime = open_runtime()
    changes = {
        "marketing_allowed": marketing,
        "require_ad_mark": ad_mark,
        "ad_mark": ad_mark_text,
        "unsubscribe_text": unsubscribe_text,
        "max_parts": max_parts,
        "notification_template_required": notification_templates,
    }
    changed = {k: v for k, v in changes.items() if v is not None}
    with runtime.engine.begin() as conn:
        t = tenants.get_tenant(conn, slug)
        policy = tenants.update_policy(conn, runtime.clock, t.id, **changed)
        if changed:
            audit.record(
                conn,
                runtime.clock,
                tenant_id=t.id,
                actor=CLI_ACTOR,
                action="policy.update",
                target=f"tenant:{slug}",
                detail={k: str(v) for k, v in changed.items()},
            )
    shown = {k: v for k, v in policy.items() if k not in ("tenant_id", "updated_at")}
    emit(shown, as_json, "\n".join(f"{k:>32}: {v}" for k, v in shown.items()))


# -- staff ------------------------------------------------------------------------------------


@staff_app.command("create")
@reports_errors
def staff_create(
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()] = "",
    role: Annotated[str, typer.Option(help="reviewer")] = "reviewer",
    password: Annotated[
        str | None,
        typer.Option(help="Omit to be asked (input hidden)", envvar="HONGYAN_NEW_PASSWORD"),
    ] = None,
    locale: Annotated[str, typer.Option()] = "zh-CN",
    as_json: JsonOpt = False,
) -> None:
    """Add a platform staff member (a reviewer); they log in at /staff/login."""
    from hongyan.staff import service as staff

    if password is None:
        password = getpass.getpass("Password (10+ characters): ")
    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        member = staff.create(
            conn, runtime.clock, email=email, name=name, password=password, role=role, locale=locale
        )
    emit(member.__dict__, as_json, f"[green]✓[/green] {member.email} ({member.role.value}) added")


@staff_app.command("list")
@reports_errors
def staff_list(as_json: JsonOpt = False) -> None:
    """Platform staff."""
    from hongyan.staff import service as staff

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        members = staff.listing(conn)
    lines = [
        f"{m.id:>4}  {m.email:<32} {m.role.value:<9}{'' if m.is_active else ' (inactive)'}"
        for m in members
    ]
    emit({"staff": [m.__dict__ for m in members]}, as_json, "\n".join(lines) or "no staff")


@staff_app.command("deactivate")
@reports_errors
def staff_deactivate(email: str, as_json: JsonOpt = False) -> None:
    """Stop a staff member: logins, sessions and keys stop working."""
    from hongyan.staff import service as staff

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        member = staff.set_active(conn, runtime.clock, email, False)
    emit(member.__dict__, as_json, f"[green]✓[/green] {member.email} deactivated")


@staff_app.command("apikey")
@reports_errors
def staff_apikey(
    email: str,
    name: Annotated[str, typer.Option(help="What the key is for")] = "review",
    as_json: JsonOpt = False,
) -> None:
    """A staff API key for /api/v1/review; printed once."""
    from hongyan.staff import service as staff

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        member = staff.get_by_email(conn, email)
        key_id, key = staff.create_key(conn, runtime.clock, member, name)
    emit(
        {"id": key_id, "email": member.email, "key": key},
        as_json,
        f"[green]✓[/green] key {key_id} for {member.email}:\n  {key}\n"
        "[yellow]Store it now: it will not be shown again.[/yellow]",
    )


# -- review -----------------------------------------------------------------------------------

AsOpt = Annotated[str, typer.Option("--as", help="The reviewer's staff e-mail")]


@review_app.command("queue")
@reports_errors
def review_queue(
    kind: Annotated[str | None, typer.Option(help="signature or template")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What waits for review, oldest first, across tenants."""
    from hongyan.content import review

    runtime = open_runtime()
    with runtime.engine.connect() as conn:
        items = review.queue(conn, kind=kind)  # type: ignore[arg-type]
    lines = []
    for i in items:
        if i["kind"] == "signature":
            lines.append(
                f"signature {i['id']:>5}  {i['tenant']:<14} {i['text']}  {i['note'] or ''}"
            )
        else:
            lines.append(
                f"template  {i['id']:>5}  {i['tenant']:<14} {i['name']} v{i['version']} "
                f"({i['category']})\n          {i['body']}"
            )
    emit({"queue": items}, as_json, "\n".join(lines) or "nothing waits for review")


def _decide(
    kind: str, item_id: int, reviewer: str, approve: bool, reason: str | None, as_json: bool
) -> None:
    from hongyan.content import review
    from hongyan.staff import service as staff

    runtime = open_runtime()
    with runtime.engine.begin() as conn:
        member = staff.get_by_email(conn, reviewer)
        if not member.is_active:
            from hongyan.errors import PermissionDenied

            raise PermissionDenied(f"{member.email} is deactivated", f"{member.email} 已停用")
        result = review.decide(
            conn,
            runtime.clock,
            staff.principal_of(member),
            kind,
            item_id,
            approve=approve,
            reason=reason,
        )
    emit(result, as_json, f"[green]✓[/green] {kind} {item_id} {result['status']}")


@review_app.command("approve")
@reports_errors
def review_approve(
    kind: Annotated[str, typer.Argument(help="signature or template")],
    item_id: Annotated[int, typer.Argument(help="The signature id or template version id")],
    reviewer: AsOpt,
    as_json: JsonOpt = False,
) -> None:
    """Approve a queued signature or template version."""
    _decide(kind, item_id, reviewer, True, None, as_json)


@review_app.command("reject")
@reports_errors
def review_reject(
    kind: Annotated[str, typer.Argument(help="signature or template")],
    item_id: Annotated[int, typer.Argument(help="The signature id or template version id")],
    reviewer: AsOpt,
    reason: Annotated[str, typer.Option(help="Why; the tenant sees it")],
    as_json: JsonOpt = False,
) -> None:
    """Reject a queued signature or template version with a reason."""
    _decide(kind, item_id, reviewer, False, reason, as_json)


def register(app: typer.Typer, tenant_app: typer.Typer) -> None:
    app.command("lint")(lint)
    app.add_typer(templates_app, name="templates")
    app.add_typer(signatures_app, name="signatures")
    app.add_typer(words_app, name="words")
    app.add_typer(staff_app, name="staff")
    app.add_typer(review_app, name="review")
    tenant_app.command("policy")(reports_errors(tenant_policy))

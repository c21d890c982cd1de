"""`hongyan contacts`, `hongyan events`, `hongyan retention`: contacts, behaviour data, purges."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hongyan.cli.main import JsonOpt, open_runtime, reports_errors
from hongyan.cli.output import emit

contacts_app = typer.Typer(
    help="Contacts: import, list, consent, data rights, custom fields", no_args_is_help=True
)
events_app = typer.Typer(help="Behaviour events: orders, browsing, carts …", no_args_is_help=True)
retention_app = typer.Typer(help="Purge what may no longer be kept", no_args_is_help=True)

TenantOpt = Annotated[str, typer.Option(help="Tenant slug")]


def _tenant_id(runtime: Any, slug: str) -> int:
    from hongyan.tenants import service as tenants

    with runtime.engine.connect() as conn:
        return int(tenants.get_tenant(conn, slug).id)


def _mapping(items: list[str] | None) -> dict[str, str]:
    from hongyan.errors import ValidationFailed

    out = {}
    for item in items or []:
        column, sep, target = item.partition("=")
        if not sep:
            raise ValidationFailed(
                f"--map takes COLUMN=FIELD, got {item!r}",
                f"--map 的格式为 列名=字段，而不是 {item!r}",
            )
        out[column.strip()] = target.strip()
    return out


@contacts_app.command("import")
@reports_errors
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV (UTF-8 / GBK) or XLSX")],
    tenant: TenantOpt,
    consent_source: Annotated[
        str | None, typer.Option(help="Where consent was given, e.g. 门店扫码")
    ] = None,
    consent_proof: Annotated[
        str | None, typer.Option(help="What the person agreed to, and how it is proven")
    ] = None,
    consent_purpose: Annotated[
        list[str] | None, typer.Option(help="marketing (default) and/or notification")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", help="Tags for every contact (repeatable)")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="COLUMN=FIELD: phone, name, … or attr:NAME[:TYPE] or ignore (repeat)"
        ),
    ] = None,
    resume: Annotated[
        int | None, typer.Option(help="Go on with this failed import of the same file")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import contacts: numbers normalised and encrypted, duplicates merged, bad rows reported."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hongyan.contacts import importer, service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    split_tags = [t for item in tags or [] for t in item.replace("，", ",").split(",") if t.strip()]
    options = importer.ImportOptions(
        mapping=_mapping(map_),
        consent_source=consent_source,
        consent_proof=consent_proof,
        consent_purposes=tuple(consent_purpose or ("marketing",)),
        tags=tuple(t.strip() for t in split_tags),
        actor="cli",
    )
    if as_json:
        result = service.import_path(runtime, tenant_id, file, options, resume=resume)
    else:
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%  {task.fields[rows]} rows"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task("import", total=1.0, rows=0)
            result = service.import_path(
                runtime,
                tenant_id,
                file,
                options,
                progress=lambda r: bar.update(task, completed=r.fraction, rows=r.rows),
                resume=resume,
            )
    body = {"import_id": result.import_id, "state": result.state, **result.counters()}
    lines = [
        f"[green]✓[/green] import {result.import_id}: {result.rows} rows in {result.seconds:.1f} s",
        f"  imported {result.imported}, updated {result.updated}, duplicates "
        f"{result.duplicates}, invalid {result.invalid}, suppressed {result.suppressed}"
        + (f", erased (not imported again) {result.erased}" if result.erased else ""),
    ]
    for e in result.errors[:10]:
        lines.append(f"  line {e['line']}: {e['message']['zh']} ({e['reason']})")
    if result.invalid:
        lines.append(
            f"  all refused rows: hongyan contacts errors {result.import_id} --tenant {tenant}"
        )
    emit(body, as_json, "\n".join(lines))


@contacts_app.command("errors")
@reports_errors
def contacts_errors(
    import_id: int,
    tenant: TenantOpt,
    output: Annotated[Path | None, typer.Option("-o", help="Write the CSV here")] = None,
) -> None:
    """The rows an import refused, as a CSV to fix and import again."""
    import sys

    from hongyan.contacts import importer

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        data = importer.error_rows_csv(conn, runtime.keyring, tenant_id, import_id)
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


@contacts_app.command("list")
@reports_errors
def contacts_list(
    tenant: TenantOpt,
    number: Annotated[str, typer.Option(help="Last 1–4 digits or the full number")] = "",
    tag: Annotated[str, typer.Option()] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Contacts, newest first (numbers and names masked)."""
    from hongyan.contacts import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        page = service.list_contacts(
            conn, runtime.keyring, tenant_id, number=number, tag=tag, limit=limit
        )
    lines = [
        f"{c['id']:>7}  {c['phone_masked']:<12} {c['name_masked'] or '—':<6} "
        f"{c['number_province'] or ''}{c['number_city'] or ''}  {' '.join(c['tags'])}"
        for c in page.items
    ]
    emit(
        {"total": page.total, "contacts": page.items},
        as_json,
        "\n".join(lines) + f"\n{page.total} contacts" if lines else "no contacts",
    )


@contacts_app.command("show")
@reports_errors
def contacts_show(number: str, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """One contact (masked) with tags, activity, interests and consent."""
    from hongyan.contacts import service
    from hongyan.errors import NotFound

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.connect() as conn:
        cid = service.find_id(conn, runtime.keyring, tenant_id, service.e164_or_error(number))
        if cid is None:
            raise NotFound("No contact with this number", "没有该号码的联系人")
        item = service.get_contact(conn, tenant_id, cid)
    emit(item, as_json, "\n".join(f"{k:>16}: {v}" for k, v in item.items()))


@contacts_app.command("export")
@reports_errors
def contacts_export(number: str, tenant: TenantOpt, as_json: JsonOpt = True) -> None:
    """Everything stored about one number, as JSON, in clear (a data-access request)."""
    from hongyan.contacts import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        data = service.export(conn, runtime.clock, runtime.keyring, tenant_id, number, "cli")
    emit(data, True)


@contacts_app.command("forget")
@reports_errors
def contacts_forget(
    number: str,
    tenant: TenantOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase a person's data; keep only the consent revocation and a suppression entry."""
    from hongyan.contacts import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    if not yes and not as_json:
        typer.confirm("Erase this person's data for good?", abort=True)
    with runtime.engine.begin() as conn:
        done = service.forget(conn, runtime.clock, runtime.keyring, tenant_id, number, "cli")
    emit(
        done.__dict__,
        as_json,
        f"[green]✓[/green] erased: contact {done.contact_id or '—'}, {done.events} events, "
        f"{done.replies} replies; {done.messages} send records no longer show the number",
    )


@contacts_app.command("consent")
@reports_errors
def contacts_consent(
    number: str,
    tenant: TenantOpt,
    action: Annotated[str, typer.Option(help="granted or revoked")],
    source: Annotated[str, typer.Option(help="Where, e.g. 门店, 小程序, 电话")],
    proof: Annotated[str, typer.Option(help="The evidence")],
    purpose: Annotated[str, typer.Option(help="marketing or notification")] = "marketing",
    as_json: JsonOpt = False,
) -> None:
    """Append a grant or revocation to the consent ledger."""
    from hongyan.contacts import service

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        out = service.record_consent(
            conn, runtime.clock, runtime.keyring, tenant_id, phone=number, purpose=purpose,
            action=action, source=source, proof=proof, actor="cli",
        )  # fmt: skip
    emit(out, as_json, f"[green]✓[/green] {out['to']}: {purpose} {action}")


@contacts_app.command("fields")
@reports_errors
def contacts_fields(
    tenant: TenantOpt,
    define: Annotated[
        list[str] | None, typer.Option(help="NAME:TYPE (text, number, date, boolean); repeat")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List (and define) the tenant's custom attributes: the {placeholders} templates may use."""
    from hongyan.contacts import fields

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    with runtime.engine.begin() as conn:
        for spec in define or []:
            name, _, kind = spec.partition(":")
            fields.define(conn, runtime.clock, tenant_id, name, kind or "text")
        defs = fields.attribute_definitions(conn, tenant_id)
    items = [d.__dict__ for d in defs]
    emit(
        {"standard": list(fields.STANDARD_FIELDS), "attributes": items},
        as_json,
        "standard: "
        + ", ".join(fields.STANDARD_FIELDS)
        + "\n"
        + "\n".join(f"  {d.name} ({d.type})" for d in defs),
    )


@contacts_app.command("check-numbers")
@reports_errors
def contacts_check_numbers(
    tenant: TenantOpt,
    as_json: JsonOpt = False,
    resume: Annotated[
        int | None,
        typer.Option(
            "--resume",
            help="Go on with the failed or stopped check of this id where it stopped "
            "(numbers already asked about are not asked again)",
        ),
    ] = None,
) -> None:
    """空号检测 with the configured provider (HONGYAN_NUMBER_STATUS_PROVIDER: receipts, http or
    receipts+http): empty numbers go on the suppression list; failures leave numbers unknown.
    Runs in the foreground as the same job the API starts (one check at a time per tenant)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hongyan.contacts import number_status, number_status_jobs

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    provider = number_status.provider_for(
        runtime.settings, runtime.engine, runtime.keyring, tenant_id
    )
    with runtime.engine.begin() as conn:
        if resume is None:
            job_id = number_status_jobs.start(
                conn, runtime.clock, runtime.settings, tenant_id, "cli"
            )
        else:
            job_id = number_status_jobs.resume(
                conn, runtime.clock, runtime.settings, tenant_id, resume, "cli"
            )

    def check(progress: Any = None) -> number_status.CheckSummary:
        return number_status_jobs.run(
            runtime.engine, runtime.clock, runtime.keyring, tenant_id, job_id, provider,
            actor="cli", progress=progress,
        )  # fmt: skip

    if as_json:
        summary = check()
    else:
        with Progress(
            TextColumn("空号检测 checking"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("contacts"),
            transient=True,
        ) as bar:
            task = bar.add_task("check", total=None)
            summary = check(lambda done, total: bar.update(task, completed=done, total=total))
    out = {"job_id": job_id, **summary.as_dict()}
    lines = [
        f"{out['provider']}: {out['checked']} checked, "
        + ", ".join(f"{k} {out[k]}" for k in number_status.STATUSES)
        + (f"; {out['skipped']} already suppressed as 空号, not asked" if out["skipped"] else "")
    ]
    for name, counts in out["by_provider"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for f in out["failures"]:
        lines.append(
            f"  [yellow]![/yellow] {f['provider']} {f['reason']}: {f['numbers']} unknown"
            f" ({escape(f['detail'])})"
        )
    emit(out, as_json, "\n".join(lines))


@contacts_app.command("zones")
@reports_errors
def contacts_zones(
    tenant: TenantOpt,
    batch: Annotated[int, typer.Option(min=100, max=50_000, help="Contacts a transaction")] = 5000,
    dry_run: Annotated[bool, typer.Option(help="Only count what would be filled")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fill in the time zone of contacts without one whose foreign number has exactly one (those
    stored before zones were kept); a zone a person or a file set is never replaced. Safe to
    run again: it goes on where it stopped."""
    from hongyan.cli.output import note
    from hongyan.contacts import time_zones

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)

    def moved(r: time_zones.BackfillResult) -> None:
        if not as_json and r.batches % 20 == 0:
            note(f"{r.read} read, {r.filled} filled …")

    result = time_zones.backfill(
        runtime.engine, runtime.clock, runtime.keyring, tenant_id, actor="cli", batch=batch,
        dry_run=dry_run, progress=moved,
    )  # fmt: skip
    out = result.as_json()
    zones = ", ".join(f"{z} {n}" for z, n in out["by_zone"].items()) or "—"
    text = (
        f"{'would fill' if dry_run else 'filled'} {out['filled']} of {out['read']} foreign "
        f"contacts without a zone ({out['no_single_zone']} without a single zone, {out['kept']} "
        f"kept as a person set them) in {out['seconds']} s\nby zone: {zones}"
    )
    emit(out, as_json, text)


@contacts_app.command("segments")
@reports_errors
def contacts_segments(as_json: JsonOpt = False) -> None:
    """The number-location data in use: its file, version (YYMM) and size."""
    from hongyan.contacts import geo

    table = geo.table()
    info = {"path": table.path, "version": table.version, "prefixes": table.prefixes}
    emit(info, as_json, f"{table.path}: version {table.version}, {table.prefixes} prefixes")


@events_app.command("import")
@reports_errors
def events_import(file: Path, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Import events (event_id, kind, phone, occurred_at, amount, order_id, coupon_code, tags);
    idempotent, so an interrupted import is resumed by running it again. An event id stored
    before with other content is not stored: counted as conflicting, its id named."""
    from rich.markup import escape

    from hongyan.contacts import events
    from hongyan.errors import NotFound

    runtime = open_runtime()
    tenant_id = _tenant_id(runtime, tenant)
    if not file.is_file():
        raise NotFound(f"No file {file.name!r}", f"找不到文件“{file.name}”")
    with file.open("rb") as stream:
        out = events.import_file(runtime, tenant_id, stream, file.name)
    text = (
        f"[green]✓[/green] {out['rows']} rows: {out['accepted']} new events, "
        f"{out['duplicates']} already stored, {out['conflicts']} conflicting, "
        f"{out['invalid']} invalid, {out['contacts_created']} new contacts, "
        f"{out['enrolled']} journey enrolments"
    )
    if out["erased"]:
        text += (
            f"\n[yellow]•[/yellow] {out['erased']} events of numbers erased at the person's "
            "request happened before the erasure and were not stored again"
        )
    if out["conflicts"]:
        shown = ", ".join(escape(i) for i in out["conflict_ids"])
        more = " …" if out["conflicts"] > len(out["conflict_ids"]) else ""
        text += (
            f"\n[yellow]•[/yellow] {out['conflicts']} events reuse a stored event id with other "
            f"content and were not stored: {shown}{more}"
        )
    emit(out, as_json, text)


@retention_app.command("run")
@reports_errors
def retention_run(as_json: JsonOpt = False) -> None:
    """Purge consent records 3 years after revocation, old import leftovers, stale uploads;
    mark imports and number checks whose process died as failed."""
    from hongyan.contacts import retention

    runtime = open_runtime()
    out = retention.run(runtime)
    emit(out, as_json, ", ".join(f"{k}: {v}" for k, v in out.items()))

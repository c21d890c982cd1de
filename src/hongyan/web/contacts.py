"""Console pages for contacts: the list (numbers masked), and an import in four steps: upload,
column mapping with a preview of the first rows, a progress bar, the result with the refused
rows to download.

The uploaded file is kept in ``var/imports/<tenant>/`` (mode 0600) between the preview and the
start of the import, and deleted when the import ends; ``hongyan retention run`` removes uploads
that were never started. The progress page polls its own panel with htmx once a second while
the import runs, and works without JavaScript by reloading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from hongyan.contacts import fields, importer, number_status, number_status_jobs, service
from hongyan.errors import NotFound, ValidationFailed
from hongyan.security.roles import Permission, can
from hongyan.web.console import _check_csrf, _redirect
from hongyan.web.records import PAGE_SIZE, _Page, _url
from hongyan.web.records import reports as _reports

MAX_UPLOAD = 512 * 2**20


def _form_text(form: Any, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def contacts_page(request: Request) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    form = {"number": view.text("number"), "tag": view.text("tag")}
    params = list(form.items())
    error = None
    page = None
    number = 1
    with view.runtime.engine.begin() as conn:
        try:
            number = _reports.parse_page(view.text("page"))
            page = service.list_contacts(
                conn,
                view.runtime.keyring,
                view.principal.tenant_id,
                number=form["number"],
                tag=form["tag"][:64],
                limit=PAGE_SIZE,
                offset=(number - 1) * PAGE_SIZE,
            )
        except _reports.BadFilter as exc:
            error = exc
        except ValidationFailed as exc:
            error = _reports.BadFilter([_reports.Problem("number", exc.message_zh, exc.message_en)])
        jobs = importer.list_jobs(conn, view.principal.tenant_id, limit=5)
        return view.respond(
            conn,
            "contacts",
            active="contacts",
            error=error,
            page=page,
            page_no=number,
            pages=max(1, -(-page.total // PAGE_SIZE)) if page else 1,
            form=form,
            jobs=jobs,
            page_url=lambda n: _url("/console/contacts", params, page=n),
        )


async def import_form(request: Request) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    with view.runtime.engine.begin() as conn:
        return view.respond(conn, "contact_import", active="contacts", error=None, step="upload")


async def import_upload(request: Request) -> Response:
    """Keep the file and show the mapping with the first rows."""
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    form = await request.form(max_part_size=64 * 1024)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationFailed("Choose a file to upload", "请选择要上传的文件")
    tenant_id = view.principal.tenant_id
    path = service.save_upload(view.runtime, tenant_id, upload.file, MAX_UPLOAD)
    try:
        preview = service.preview(path)
    except ValidationFailed:
        path.unlink(missing_ok=True)
        raise
    options = {
        "consent_source": _form_text(form, "consent_source", 32),
        "consent_proof": _form_text(form, "consent_proof"),
        "tags": _form_text(form, "tags", 500),
    }
    importer.ImportOptions(
        consent_source=options["consent_source"] or None,
        consent_proof=options["consent_proof"] or None,
    ).check()
    with view.runtime.engine.begin() as conn:
        definitions = {d.name: d.type for d in fields.attribute_definitions(conn, tenant_id)}
        return view.respond(
            conn,
            "contact_import",
            active="contacts",
            error=None,
            step="preview",
            preview=preview,
            token=path.name,
            filename=Path(upload.filename).name[:200],
            options=options,
            standard=fields.STANDARD_FIELDS,
            types=fields.TYPES,
            definitions=definitions,
            columns=list(enumerate(preview.header)),
        )


async def import_start(request: Request) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    form = await request.form()
    tenant_id = view.principal.tenant_id
    path = service.upload_path(view.runtime, tenant_id, _form_text(form, "token", 64))
    header = service.preview(path, rows=0).header
    mapping: dict[str, str] = {}
    for i, column in enumerate(header):
        choice = _form_text(form, f"col{i}", 120)
        if choice == "attr":
            choice = f"attr:{column}:{_form_text(form, f'type{i}', 10) or 'text'}"
        mapping[column] = choice or "ignore"
    tags = _form_text(form, "tags", 500).replace("，", ",")
    options = importer.ImportOptions(
        mapping=mapping,
        consent_source=_form_text(form, "consent_source", 32) or None,
        consent_proof=_form_text(form, "consent_proof") or None,
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        actor=f"user:{view.principal.user_id}",
    )
    importer.plan_mapping(header, mapping)  # a bad mapping is an error page now, not later
    filename = _form_text(form, "filename", 200) or "upload"
    with view.runtime.engine.begin() as conn:
        import_id = service.create_import(
            conn, view.runtime.clock, tenant_id, path, filename, options
        )
    service.run_in_background(view.runtime, tenant_id, import_id, path, filename, options)
    return _redirect(f"/console/contacts/imports/{import_id}")


def _job_id(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise NotFound("No such import", "找不到该导入任务")
    return int(value)


def import_page(request: Request, import_id: str) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    tenant_id = view.principal.tenant_id
    with view.runtime.engine.begin() as conn:
        job = importer.get_job(conn, tenant_id, _job_id(import_id))
        resumable = (
            job["state"] == "failed"
            and bool((job["result"] or {}).get("line"))
            and service.kept_upload(view.runtime, tenant_id, job["id"]).is_file()
            and can(view.principal.role, Permission.MANAGE_CONTACTS)
        )
        return view.respond(
            conn,
            "contact_job",
            active="contacts",
            error=None,
            job=job,
            resumable=resumable,
            percent=round(100 * float(job.get("progress") or 0)),
            reasons=importer.ROW_PROBLEMS,
        )


async def import_resume(request: Request, import_id: str) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    number = _job_id(import_id)
    actor = f"user:{view.principal.user_id}"
    service.resume_in_background(view.runtime, view.principal.tenant_id, number, actor)
    return _redirect(f"/console/contacts/imports/{number}")


def import_errors(request: Request, import_id: str) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    with view.runtime.engine.begin() as conn:
        data = importer.error_rows_csv(
            conn, view.runtime.keyring, view.principal.tenant_id, _job_id(import_id)
        )
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"',
            "Cache-Control": "no-store",
        },
    )


async def check_start(request: Request) -> Response:
    """Start a 空号检测 of every contact in the background and show its page; while one is under
    way, show that one instead of refusing."""
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    runtime, tenant_id = view.runtime, view.principal.tenant_id
    actor = f"user:{view.principal.user_id}"
    # Built (and the settings checked) before the job exists: a wrong setting is an error page.
    provider = number_status.provider_for(
        runtime.settings, runtime.engine, runtime.keyring, tenant_id
    )
    try:
        with runtime.engine.begin() as conn:
            job_id = number_status_jobs.start(
                conn, runtime.clock, runtime.settings, tenant_id, actor
            )
    except number_status_jobs.CheckUnderWay as exc:
        return _redirect(f"/console/contacts/checks/{exc.details['id']}")
    number_status_jobs.run_in_background(runtime, tenant_id, job_id, provider, actor)
    return _redirect(f"/console/contacts/checks/{job_id}")


def _check_id(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise NotFound("No such number check", "找不到该空号检测任务")
    return int(value)


async def check_cancel(request: Request, check_id: str) -> Response:
    """Stop a check (a check that has just ended meanwhile is simply shown)."""
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    number = _check_id(check_id)
    actor = f"user:{view.principal.user_id}"
    runtime = view.runtime
    try:
        with runtime.engine.begin() as conn:
            number_status_jobs.cancel(conn, runtime.clock, view.principal.tenant_id, number, actor)
    except number_status_jobs.CheckEnded:
        pass
    return _redirect(f"/console/contacts/checks/{number}")


async def check_resume(request: Request, check_id: str) -> Response:
    """Go on with a failed or stopped check where it stopped."""
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    number = _check_id(check_id)
    runtime, tenant_id = view.runtime, view.principal.tenant_id
    actor = f"user:{view.principal.user_id}"
    provider = number_status.provider_for(
        runtime.settings, runtime.engine, runtime.keyring, tenant_id
    )
    try:
        with runtime.engine.begin() as conn:
            number_status_jobs.resume(
                conn, runtime.clock, runtime.settings, tenant_id, number, actor
            )
    except number_status_jobs.CheckUnderWay as exc:
        return _redirect(f"/console/contacts/checks/{exc.details['id']}")
    except (number_status_jobs.CheckNotResumable, number_status_jobs.CheckStopping):
        return _redirect(f"/console/contacts/checks/{number}")  # (a second click): as it is
    number_status_jobs.run_in_background(runtime, tenant_id, number, provider, actor)
    return _redirect(f"/console/contacts/checks/{number}")


def check_page(request: Request, check_id: str) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    number = _check_id(check_id)
    runtime = view.runtime
    with runtime.engine.connect() as conn:  # polled: no write lock taken on SQLite
        job = number_status_jobs.get(conn, view.principal.tenant_id, number)
        # A stopped check's last batch is counted by its run a little later: follow it, but
        # not a run that died (taken for dead after stuck_after).
        recent = runtime.clock.now() - number_status_jobs.stuck_after(runtime.settings)
        finishing = job["stopping"] and (job["finished_at"] or recent) > recent
        return view.respond(
            conn,
            "number_check",
            active="suppressions",
            error=None,
            job=job,
            provider=(job.get("result") or {}).get("provider")
            or view.runtime.settings.number_status_provider,
            percent=round(100 * float(job["progress"])),
            can_stop=can(view.principal.role, Permission.MANAGE_CONTACTS),
            finishing=finishing,
        )


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    app.add_api_route("/console/contacts", contacts_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/console/contacts/import", import_form, methods=["GET"], include_in_schema=False
    )
    app.add_api_route(
        "/console/contacts/import", import_upload, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        "/console/contacts/import/start", import_start, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        "/console/contacts/checks", check_start, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        "/console/contacts/checks/{check_id}", check_page, methods=["GET"], include_in_schema=False
    )
    app.add_api_route(
        "/console/contacts/checks/{check_id}/resume",
        check_resume,
        methods=["POST"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/console/contacts/checks/{check_id}/cancel",
        check_cancel,
        methods=["POST"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/console/contacts/imports/{import_id}",
        import_page,
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/console/contacts/imports/{import_id}/resume",
        import_resume,
        methods=["POST"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/console/contacts/imports/{import_id}/errors.csv",
        import_errors,
        methods=["GET"],
        include_in_schema=False,
    )

"""Contacts and behaviour events through the API: imports (upload, progress, result, refused
rows), the contact list (numbers masked), consent, custom attributes, data rights, number
checks (a background job, polled), events."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import BigInt, Id
from hongyan.api.responses import CSV_FILE, errors
from hongyan.api.routing import api_router
from hongyan.contacts import (
    events,
    fields,
    importer,
    number_status,
    number_status_jobs,
    service,
)
from hongyan.errors import ValidationFailed
from hongyan.runtime import Runtime
from hongyan.security import audit
from hongyan.security.roles import Permission
from hongyan.tenants import service as tenants

router = api_router("contacts")
MAX_UPLOAD = 512 * 2**20


class ContactOut(BaseModel):
    id: int
    phone: str = Field(description="Masked number, e.g. 138****5678")
    name: str | None = Field(description="Masked name, e.g. 李**")
    gender: str | None
    birth_month: int | None
    birth_day: int | None
    birth_decade: int | None
    province: str | None
    city: str | None
    number_province: str | None = Field(description="Where the number was issued")
    number_city: str | None
    carrier: str | None
    mvno: bool
    country: str
    tags: list[str]
    attrs: dict[str, Any]
    source: str
    created_at: datetime
    updated_at: datetime
    time_zone: str | None = Field(
        None, description="IANA time zone for quiet hours; null: the tenant's zone"
    )


class ContactDetail(ContactOut):
    activity: dict[str, Any] | None
    interests: list[dict[str, Any]]
    consent: dict[str, Any]


def _out(row: dict[str, Any], model: type[ContactOut] = ContactOut) -> Any:
    data = dict(row)
    data["phone"] = data.pop("phone_masked")
    data["name"] = data.pop("name_masked")
    return model(**data)


class ContactList(BaseModel):
    total: int
    contacts: list[ContactOut]


@router.get("/contacts", response_model=ContactList, summary="Contacts, newest first")
def list_contacts(
    number: str = "",
    tag: str = "",
    limit: int = 50,
    offset: BigInt = 0,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> ContactList:
    """``number``: the last 1–4 digits, or a full number (matched by blind index)."""
    who.require(Permission.READ_CONTACTS)
    page = service.list_contacts(
        conn,
        runtime.keyring,
        who.tenant_id,
        number=number[:40],
        tag=tag[:64],
        limit=max(1, min(limit, 500)),
        offset=max(0, offset),
    )
    return ContactList(total=page.total, contacts=[_out(c) for c in page.items])


# -- imports ---------------------------------------------------------------------------------------


def _options(
    who: Principal,
    mapping: str,
    consent_source: str | None,
    consent_proof: str | None,
    consent_purposes: str,
    tags: str,
) -> importer.ImportOptions:
    try:
        given = json.loads(mapping or "{}")
    except json.JSONDecodeError:
        given = None
    if not isinstance(given, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in given.items()
    ):
        raise ValidationFailed(
            'mapping is a JSON object {"column": "field"}',
            'mapping 须为 JSON 对象 {"列名": "字段"}',
        )
    return importer.ImportOptions(
        mapping=given,
        consent_source=consent_source or None,
        consent_proof=consent_proof or None,
        consent_purposes=tuple(p.strip() for p in consent_purposes.split(",") if p.strip())
        or ("marketing",),
        tags=tuple(t.strip() for t in tags.replace("，", ",").split(",") if t.strip()),
        actor=who.actor,
    )


@router.post("/contacts/imports", status_code=202, summary="Upload a file to import")
def create_import(
    file: UploadFile = File(description="CSV (UTF-8, GBK) or XLSX"),
    mapping: str = Form("{}", description='{"column": "phone" | "name" | "attr:积分:number" …}'),
    consent_source: str | None = Form(None),
    consent_proof: str | None = Form(None),
    consent_purposes: str = Form("marketing"),
    tags: str = Form("", description="Comma-separated tags for every contact"),
    *,
    tasks: BackgroundTasks,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Starts the import and answers at once; follow it at ``GET /contacts/imports/{id}``."""
    who.require(Permission.MANAGE_CONTACTS)
    options = _options(who, mapping, consent_source, consent_proof, consent_purposes, tags)
    options.check()
    name = file.filename or "upload"
    path = service.save_upload(runtime, who.tenant_id, file.file, MAX_UPLOAD)
    import_id = service.create_import(conn, runtime.clock, who.tenant_id, path, name, options)
    # After the request's transaction has committed (the import's row is then visible).
    tasks.add_task(
        service.run_in_background, runtime, who.tenant_id, import_id, path, name, options
    )
    return {"id": import_id, "state": "pending", "url": f"/api/v1/contacts/imports/{import_id}"}


@router.post(
    "/contacts/imports/{import_id}/resume", status_code=202, summary="Resume a failed import"
)
def resume_import(
    import_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Go on from the last committed batch of an uploaded import that failed after storing
    some rows (its file is kept a day); follow it at ``GET /contacts/imports/{id}``."""
    who.require(Permission.MANAGE_CONTACTS)
    importer.get_job(conn, who.tenant_id, import_id)  # another tenant's id: 404
    service.resume_in_background(runtime, who.tenant_id, import_id, who.actor)
    return {"id": import_id, "state": "pending", "url": f"/api/v1/contacts/imports/{import_id}"}


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job["id"],
        "kind": job["kind"],
        "filename": job["filename"],
        "state": job["state"],
        "progress": job.get("progress", 0.0),
        "result": job["result"],
        "error": job["error"],
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
    }


@router.get("/contacts/imports", summary="Recent imports")
def list_imports(
    who: Principal = Depends(get_principal), conn: Connection = CONN
) -> list[dict[str, Any]]:
    who.require(Permission.READ_CONTACTS)
    return [
        _job_view(importer.get_job(conn, who.tenant_id, j["id"]))
        for j in importer.list_jobs(conn, who.tenant_id)
    ]


@router.get("/contacts/imports/{import_id}", summary="An import's progress and result")
def get_import(
    import_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return _job_view(importer.get_job(conn, who.tenant_id, import_id))


@router.get(
    "/contacts/imports/{import_id}/errors.csv",
    summary="The rows an import refused, as CSV",
    response_class=Response,
    responses=CSV_FILE,
)
def import_errors(
    import_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    """The file's own columns (numbers as the file wrote them), then line, reason, message;
    cells that start like a formula are escaped."""
    who.require(Permission.MANAGE_CONTACTS)
    data = importer.error_rows_csv(conn, runtime.keyring, who.tenant_id, import_id)
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'},
    )


# -- consent, data rights, fields, number checks ---------------------------------------------------


class NumberIn(BaseModel):
    phone: str = Field(max_length=40, description="The number as written; normalised")


class ConsentIn(NumberIn):
    purpose: str = Field(pattern="^(marketing|notification)$")
    action: str = Field(pattern="^(granted|revoked)$")
    source: str = Field(min_length=1, max_length=32)
    proof: str = Field(min_length=1, max_length=2000)


@router.post("/contacts/consent", status_code=201, summary="Record consent given or withdrawn")
def record_consent(
    body: ConsentIn,
    request: Request,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_CONTACTS)
    return service.record_consent(
        conn,
        runtime.clock,
        runtime.keyring,
        who.tenant_id,
        phone=body.phone,
        purpose=body.purpose,
        action=body.action,
        source=body.source,
        proof=body.proof,
        actor=who.actor,
        ip=request.client.host if request.client else None,
    )


@router.post(
    "/contacts/export",
    summary="Everything stored about a number (data access)",
    responses=errors(404),
)
def export_contact(
    body: NumberIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """The one answer that shows the full number: the person's own copy. Audited."""
    who.require(Permission.MANAGE_CONTACTS)
    return service.export(
        conn, runtime.clock, runtime.keyring, who.tenant_id, body.phone, who.actor
    )


@router.post("/contacts/forget", summary="Erase a person's data")
def forget_contact(
    body: NumberIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Keeps only the consent revocation and a suppression entry by blind index. Audited."""
    who.require(Permission.MANAGE_CONTACTS)
    done = service.forget(
        conn, runtime.clock, runtime.keyring, who.tenant_id, body.phone, who.actor
    )
    return dict(done.__dict__)


class FieldIn(BaseModel):
    type: str = Field(pattern="^(text|number|date|boolean)$")
    label: str | None = Field(default=None, max_length=100)


@router.get("/contacts/fields", summary="Standard fields and custom attributes")
def list_fields(who: Principal = Depends(get_principal), conn: Connection = CONN) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return {
        "standard": list(fields.STANDARD_FIELDS),
        "attributes": [d.__dict__ for d in fields.attribute_definitions(conn, who.tenant_id)],
    }


@router.put(
    "/contacts/fields/{name}", summary="Define or relabel a custom attribute", responses=errors(409)
)
def put_field(
    name: str,
    body: FieldIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    who.require(Permission.MANAGE_CONTACTS)
    made = fields.define(conn, runtime.clock, who.tenant_id, name, body.type, body.label)
    audit.record(
        conn,
        runtime.clock,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="contact_field.define",
        target=f"field:{made.name}",
        detail={"type": made.type},
    )
    return dict(made.__dict__)


@router.delete("/contacts/fields/{name}", status_code=204, summary="Remove a custom attribute")
def delete_field(
    name: str, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> None:
    who.require(Permission.MANAGE_CONTACTS)
    fields.remove(conn, who.tenant_id, name)


class CheckFailureOut(BaseModel):
    provider: str = Field(description="The provider that failed, e.g. http")
    reason: str = Field(
        description="timeout, connection, http_status, malformed, missing, unmapped_code or "
        "not_sent"
    )
    numbers: int = Field(description="Numbers it left unknown")
    requests: int = Field(description="Requests (or batches) that failed so")
    detail: str = Field(description="What went wrong; never a number or a key")


class NumberCheckOut(BaseModel):
    provider: str = Field(description="The configured provider: receipts, http or receipts+http")
    checked: int
    active: int
    empty: int = Field(description="Numbers found 空号, now on the suppression list (invalid)")
    unknown: int = Field(description="Including the numbers left unknown by failures")
    skipped: int = Field(description="Not checked: already suppressed as 空号 (not expired)")
    by_provider: dict[str, dict[str, int]] = Field(
        description="Which provider answered for how many numbers, by status"
    )
    failures: list[CheckFailureOut]


class ErrorOut(BaseModel):
    code: str = Field(description="e.g. number_check_abandoned, number_check_failed")
    message: dict[str, str] = Field(description="{zh, en}: what happened")
    details: dict[str, Any] | None = None


class NumberCheckJobOut(BaseModel):
    id: int
    state: str = Field(description="pending, running, done or failed")
    progress: float = Field(description="0–1: processed / total (1 once done)")
    processed: int = Field(
        description="Contacts gone through so far: checked, or skipped as already 空号"
    )
    total: int | None = Field(
        description="The tenant's contacts when the check started (null while pending)"
    )
    result: NumberCheckOut | None = Field(
        description="The summary so far (null before the first batch); final once done, what "
        "was found before the failure if failed"
    )
    error: ErrorOut | None = Field(description="Why a failed check stopped")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str = Field(description="Where to follow it")
    stopping: bool = Field(
        description="Stopped by hand, its run still finishing the batch it was checking: "
        "result grows once more, and the check cannot be resumed until then"
    )


@router.post(
    "/contacts/check-numbers",
    status_code=202,
    summary="Start a 空号检测 with the configured provider; empty numbers are suppressed",
    response_model=NumberCheckJobOut,
    responses={
        409: {
            "description": "A check of this tenant is already pending or running (code "
            "number_check_running; details.id and details.url name it)"
        }
    },
)
def check_numbers(
    tasks: BackgroundTasks,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """Checks every contact's number with ``HONGYAN_NUMBER_STATUS_PROVIDER`` (the tenant's own
    receipts, a paid service, or the receipts and then the service for what they leave unknown)
    in the background: the answer is the job, followed at ``GET
    /contacts/check-numbers/{id}`` until it is ``done`` (its ``result`` is then the summary) or
    ``failed`` (its ``error`` says why). One check at a time per tenant. A failure of the
    service never makes a number empty: its numbers are counted unknown and the failure is
    listed."""
    who.require(Permission.MANAGE_CONTACTS)
    # Built (and the settings checked) before the job exists: a wrong setting is this answer.
    provider = number_status.provider_for(
        runtime.settings, runtime.engine, runtime.keyring, who.tenant_id
    )
    job_id = number_status_jobs.start(
        conn, runtime.clock, runtime.settings, who.tenant_id, who.actor
    )
    # After the request's transaction has committed (the job's row is then visible).
    tasks.add_task(
        number_status_jobs.run_in_background, runtime, who.tenant_id, job_id, provider, who.actor
    )
    return number_status_jobs.get(conn, who.tenant_id, job_id)


@router.post(
    "/contacts/check-numbers/{job_id}/resume",
    status_code=202,
    summary="Resume a failed or stopped number check where it stopped",
    response_model=NumberCheckJobOut,
    responses={
        409: {
            "description": "The check did not fail (number_check_not_resumable), another check "
            "of the tenant is under way (number_check_running), or a stopped check is still "
            "finishing its last batch (number_check_stopping)"
        }
    },
)
def resume_number_check(
    job_id: Id,
    tasks: BackgroundTasks,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """The same job goes on after the last contact its stopped run went through (numbers
    already asked about are not asked, nor paid for, again), its counts going on from where
    they were; contacts added since are checked too. Answers 202 with the job, ``pending``."""
    who.require(Permission.MANAGE_CONTACTS)
    provider = number_status.provider_for(
        runtime.settings, runtime.engine, runtime.keyring, who.tenant_id
    )
    number_status_jobs.resume(
        conn, runtime.clock, runtime.settings, who.tenant_id, job_id, who.actor
    )
    tasks.add_task(
        number_status_jobs.run_in_background, runtime, who.tenant_id, job_id, provider, who.actor
    )
    return number_status_jobs.get(conn, who.tenant_id, job_id)


@router.post(
    "/contacts/check-numbers/{job_id}/cancel",
    summary="Stop a pending or running number check",
    response_model=NumberCheckJobOut,
    responses={409: {"description": "The check has already ended (code number_check_ended)"}},
)
def cancel_number_check(
    job_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """The check is ``failed`` at once with the error ``number_check_cancelled``; its run stops
    after the batch in hand (whose empty numbers are suppressed and counted in ``result``) and
    asks the provider nothing more. What it found stays on the suppression list."""
    who.require(Permission.MANAGE_CONTACTS)
    return number_status_jobs.cancel(conn, runtime.clock, who.tenant_id, job_id, who.actor)


@router.get(
    "/contacts/check-numbers",
    summary="The tenant's latest number checks, newest first",
    response_model=list[NumberCheckJobOut],
)
def list_number_checks(
    limit: int = Query(20, ge=1, le=100, description="How many checks, at most"),
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> list[dict[str, Any]]:
    who.require(Permission.READ_CONTACTS)
    return number_status_jobs.recent(conn, who.tenant_id, limit)


@router.get(
    "/contacts/check-numbers/{job_id}",
    summary="A number check's progress and result",
    response_model=NumberCheckJobOut,
)
def get_number_check(
    job_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> dict[str, Any]:
    who.require(Permission.READ_CONTACTS)
    return number_status_jobs.get(conn, who.tenant_id, job_id)


# -- events ----------------------------------------------------------------------------------------


class EventsIn(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="Up to 1000: {event_id, kind (order, browse, favourite, add_to_cart, "
        "registration, order_signed), phone, occurred_at (ISO 8601; without an offset: the "
        "tenant's time zone; at most a day after now), amount (yuan) or amount_fen, order_id, "
        "coupon_code, tags, properties}",
    )


class EventsOut(BaseModel):
    received: int = Field(description="Events in the batch")
    accepted: int = Field(description="New events, stored: only they move the aggregates")
    duplicates: int = Field(
        description="Events whose id was stored before (or came earlier in the batch) with the "
        "same content: replays, which change nothing"
    )
    conflicts: int = Field(
        description="Events whose id was stored before (or, in a file import, came earlier in "
        "the batch) with other content (kind, number, occurred_at, order_id, amount, "
        "coupon_code, tags or properties): not stored, the stored event stays as it was"
    )
    conflict_ids: list[str] = Field(
        description=f"The ids of those conflicts, at most {events.MAX_CONFLICT_IDS}"
    )
    erased: int = Field(
        description="Events of a number whose data was erased at the person's request "
        "(contacts/forget) that happened by the erasure: not stored again (one after it is)"
    )
    contacts_created: int = Field(description="Contacts made for the new events' numbers")
    enrolled: int = Field(description="Journey enrolments the new events started")


@router.post(
    "/events",
    summary="Post behaviour events (idempotent by event_id)",
    response_model=EventsOut,
)
def post_events(
    body: EventsIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, Any]:
    """A batch is all or nothing: one bad event and none is stored (422 lists them). An event
    more than a day after now is bad (``occurred_at``): it would stand as the contact's latest
    order or interaction for good; so is an event id given twice in the batch with other
    content (``event_id``). An event id stored before is counted under ``duplicates`` if its
    content is the same, else under ``conflicts`` (and named in ``conflict_ids``); neither
    changes anything."""
    who.require(Permission.MANAGE_CONTACTS)
    tenant = tenants.get_tenant_by_id(conn, who.tenant_id)
    parsed = events.parse_batch(body.events, ZoneInfo(tenant.timezone), now=runtime.clock.now())
    if not parsed:
        raise ValidationFailed("No events in the batch", "本批没有事件")
    return events.ingest(conn, runtime.clock, runtime.keyring, who.tenant_id, parsed).as_json()


# Last: its path would otherwise take /contacts/imports and /contacts/fields.
@router.get("/contacts/{contact_id}", response_model=ContactDetail, summary="One contact")
def get_contact(
    contact_id: BigInt, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> ContactDetail:
    who.require(Permission.READ_CONTACTS)
    result: ContactDetail = _out(
        service.get_contact(conn, who.tenant_id, contact_id), ContactDetail
    )
    return result


class ContactPatch(BaseModel):
    time_zone: str | None = Field(
        description="IANA time zone (America/New_York) that quiet hours and send windows "
        "follow for this person; null: the tenant's zone",
    )


@router.patch("/contacts/{contact_id}", response_model=ContactDetail, summary="Set a time zone")
def patch_contact(
    contact_id: BigInt,
    body: ContactPatch,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> ContactDetail:
    who.require(Permission.MANAGE_CONTACTS)
    row = service.set_time_zone(
        conn, runtime.clock, who.tenant_id, contact_id, body.time_zone, actor=who.actor
    )
    result: ContactDetail = _out(row, ContactDetail)
    return result

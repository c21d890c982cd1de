"""Contacts as the rest of the platform uses them: import a file, list, look up, record consent,
export a person's data on request and erase it (data rights).

Numbers leave this module masked, except in :func:`export`, which is the person's own copy of
their data (PIPL Art. 45) and is written to the audit log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.contacts import importer, suppression
from hongyan.contacts.numbers import NUMBER_PROBLEMS, NumberProblem, check_zone, normalise
from hongyan.contacts.sources import check_whole, open_table
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    audience_members,
    consent_records,
    contact_activity,
    contact_events,
    contact_interests,
    contact_tags,
    contacts,
    inbound_messages,
    messages,
    suppressions,
)
from hongyan.errors import NotFound, ValidationFailed
from hongyan.runtime import Runtime
from hongyan.security import audit
from hongyan.security.keyring import KeyRing, mask_phone

CONSENT_KEEP = timedelta(days=3 * 365 + 1)  # at least three years after revocation
# Files from this size on are read, checked and encrypted in a second process while this one
# writes (about 80,000 rows of a typical export); smaller ones are not worth its start-up.
PIPELINE_MIN_BYTES = 4 * 2**20


class BadNumber(ValidationFailed):
    code = "invalid_number"


def e164_or_error(text: str) -> str:
    """A number as a person typed it, normalised, or a typed error saying why not."""
    try:
        return normalise(text)
    except NumberProblem as exc:
        en, zh = NUMBER_PROBLEMS[exc.code]
        raise BadNumber(en, zh, details={"reason": exc.code}) from None


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def import_stream(
    runtime: Runtime,
    tenant_id: int,
    stream: IO[bytes],
    filename: str,
    options: importer.ImportOptions,
    *,
    import_id: int | None = None,
    progress: Callable[[importer.ImportResult], None] | None = None,
    resume: bool = False,
) -> importer.ImportResult:
    """Import a seekable binary stream (a file on disk, an upload); returns the result.

    A job row is made first (unless ``import_id`` names one), so a file that cannot even be
    opened still leaves a ``failed`` import saying why.
    """
    options.check()
    size = stream.seek(0, 2)
    stream.seek(0)
    digest = sha256_of(stream)
    if resume:
        assert import_id is not None
        with runtime.engine.connect() as conn:
            job = importer.get_job(conn, tenant_id, import_id)
        if job["file_sha256"] != digest:
            raise ValidationFailed(
                "This is not the file the import started with; start a new import instead",
                "这不是该导入最初使用的文件，请新建导入",
            )
        saved = job["options"]
        options = importer.ImportOptions(
            mapping=dict(saved.get("mapping") or {}),
            consent_source=saved.get("consent_source"),
            consent_proof=saved.get("consent_proof"),
            consent_purposes=tuple(saved.get("consent_purposes") or ("marketing",)),
            tags=tuple(saved.get("tags") or ()),
            actor=options.actor,
            batch_size=options.batch_size,
        )
    if import_id is None:
        with runtime.engine.begin() as conn:
            import_id = importer.create_job(
                conn,
                runtime.clock,
                tenant_id,
                kind="contacts",
                filename=filename,
                options=options.as_json(),
                actor=options.actor,
                sha256=digest,
            )
    path = getattr(stream, "name", None)
    pipelined = (
        isinstance(path, str)
        and Path(path).is_file()
        and (options.pipeline if options.pipeline is not None else size >= PIPELINE_MIN_BYTES)
    )
    try:
        table = open_table(stream, size)
        if not pipelined:
            # A first pass finds what is wrong with the file as a whole (its encoding, a 10 MB
            # line) before anything is stored. (Pipelined, importer._from_readers makes that
            # pass while its reader processes start, before it takes their first batch.)
            check_whole(stream, table)
            table = open_table(stream, size)
    except ValidationFailed as exc:
        with runtime.engine.begin() as conn:
            conn.execute(
                TenantScope(tenant_id)
                .update(importer.contact_imports)
                .where(importer.contact_imports.c.id == import_id)
                .values(state="failed", error=exc.body(), finished_at=runtime.clock.now())
            )
        raise
    return importer.run(
        runtime.engine,
        runtime.keyring,
        runtime.clock,
        tenant_id,
        table,
        options,
        import_id=import_id,
        progress=progress,
        resume=resume,
        pipeline=importer.Pipeline(
            str(path),
            size,
            (runtime.settings.data_keys, runtime.settings.active_key, runtime.settings.index_key),
        )
        if pipelined
        else None,
    )


def import_path(
    runtime: Runtime,
    tenant_id: int,
    path: Path,
    options: importer.ImportOptions,
    progress: Callable[[importer.ImportResult], None] | None = None,
    *,
    resume: int | None = None,
) -> importer.ImportResult:
    """Import a file; ``resume``: the id of a failed import of the same file to go on with."""
    if not path.is_file():
        raise NotFound(f"No file {path.name!r}", f"找不到文件“{path.name}”")
    with path.open("rb") as stream:
        return import_stream(
            runtime,
            tenant_id,
            stream,
            path.name,
            options,
            progress=progress,
            import_id=resume,
            resume=resume is not None,
        )


# -- reading ---------------------------------------------------------------------------------------

LIST_COLUMNS = (
    contacts.c.id,
    contacts.c.phone_masked,
    contacts.c.name_masked,
    contacts.c.gender,
    contacts.c.birth_month,
    contacts.c.birth_day,
    contacts.c.birth_decade,
    contacts.c.province,
    contacts.c.city,
    contacts.c.number_province,
    contacts.c.number_city,
    contacts.c.carrier,
    contacts.c.mvno,
    contacts.c.country,
    contacts.c.attrs,
    contacts.c.source,
    contacts.c.created_at,
    contacts.c.updated_at,
    contacts.c.time_zone,
)


@dataclass
class ContactPage:
    items: list[dict[str, Any]]
    total: int


def find_id(conn: Connection, keyring: KeyRing, tenant_id: int, e164: str) -> int | None:
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    found = conn.execute(
        TenantScope(tenant_id)
        .select(contacts, contacts.c.id)
        .where(contacts.c.phone_index == index)
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def _tags_of(conn: Connection, scope: TenantScope, ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if not ids:
        return out
    rows = conn.execute(
        scope.select(contact_tags, contact_tags.c.contact_id, contact_tags.c.tag)
        .where(contact_tags.c.contact_id.in_(ids))
        .order_by(contact_tags.c.tag)
    ).all()
    for r in rows:
        out.setdefault(int(r.contact_id), []).append(r.tag)
    return out


def list_contacts(
    conn: Connection,
    keyring: KeyRing,
    tenant_id: int,
    *,
    number: str = "",
    tag: str = "",
    limit: int = 50,
    offset: int = 0,
) -> ContactPage:
    """Newest first; numbers and names masked. ``number``: the last 1–4 digits or a full
    number; ``tag``: contacts with that tag."""
    scope = TenantScope(tenant_id)
    where: list[sa.ColumnElement[bool]] = []
    number = number.strip()
    if number:
        if number.isdigit() and len(number) <= 4:
            where.append(contacts.c.phone_masked.endswith(number))
        else:
            e164 = e164_or_error(number)
            where.append(
                contacts.c.phone_index
                == keyring.blind_index(e164, suppression.phone_context(tenant_id))
            )
    if tag:
        where.append(
            sa.exists().where(
                contact_tags.c.contact_id == contacts.c.id,
                scope.owns(contact_tags),
                contact_tags.c.tag == tag,
            )
        )
    total = conn.execute(scope.select(contacts, sa.func.count()).where(*where)).scalar_one()
    rows = conn.execute(
        scope.select(contacts, *LIST_COLUMNS)
        .where(*where)
        .order_by(contacts.c.created_at.desc(), contacts.c.id.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    items = [dict(r) for r in rows]
    tags = _tags_of(conn, scope, [r["id"] for r in items])
    for item in items:
        item["tags"] = tags.get(item["id"], [])
    return ContactPage(items, int(total))


def get_contact(conn: Connection, tenant_id: int, contact_id: int) -> dict[str, Any]:
    """One contact as the console and API show it (masked), with tags, activity, interests and
    current consent."""
    scope = TenantScope(tenant_id)
    row = (
        conn.execute(
            scope.select(contacts, *LIST_COLUMNS, contacts.c.phone_index).where(
                contacts.c.id == contact_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such contact", "找不到该联系人")
    item = dict(row)
    index = bytes(item.pop("phone_index"))
    item["tags"] = _tags_of(conn, scope, [contact_id]).get(contact_id, [])
    activity = (
        conn.execute(
            scope.select(contact_activity).where(contact_activity.c.contact_id == contact_id)
        )
        .mappings()
        .first()
    )
    item["activity"] = (
        {k: v for k, v in activity.items() if k not in ("tenant_id", "contact_id")}
        if activity
        else None
    )
    interests = conn.execute(
        scope.select(contact_interests)
        .where(contact_interests.c.contact_id == contact_id)
        .order_by(contact_interests.c.weight.desc())
        .limit(20)
    ).mappings()
    item["interests"] = [
        {"tag": r["tag"], "events": r["events"], "weight": r["weight"], "last_at": r["last_at"]}
        for r in interests
    ]
    item["consent"] = consent_of(conn, tenant_id, index)
    return item


class BadTimeZone(ValidationFailed):
    code = "invalid_time_zone"


def set_time_zone(
    conn: Connection, clock: Clock, tenant_id: int, contact_id: int, zone: str | None, *,
    actor: str,
) -> dict[str, Any]:  # fmt: skip
    """Set (an IANA name, checked with ``zoneinfo``) or clear (None: the tenant's zone again)
    the contact's time zone, which quiet hours and send windows follow."""
    if zone is not None:
        try:
            zone = check_zone(zone)
        except ValueError:
            raise BadTimeZone(
                f"{str(zone)[:64]!r} is not an IANA time zone (e.g. America/New_York)",
                f"“{str(zone)[:64]}”不是有效的 IANA 时区（如 America/New_York）",
            ) from None
    result = conn.execute(
        TenantScope(tenant_id)
        .update(contacts)
        .where(contacts.c.id == contact_id)
        .values(time_zone=zone, updated_at=clock.now())
    )
    if result.rowcount != 1:
        raise NotFound("No such contact", "找不到该联系人")
    audit.record(
        conn, clock, tenant_id=tenant_id, actor=actor, action="contact.time_zone",
        target=f"contact:{contact_id}", detail={"time_zone": zone},
    )  # fmt: skip
    return get_contact(conn, tenant_id, contact_id)


def consent_of(conn: Connection, tenant_id: int, index: bytes) -> dict[str, Any]:
    """The current consent per purpose, derived from the ledger (its latest record)."""
    out: dict[str, Any] = {}
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(consent_records)
        .where(consent_records.c.phone_index == index)
        .order_by(consent_records.c.at, consent_records.c.id)
    ).mappings()
    for r in rows:
        out[r["purpose"]] = {"action": r["action"], "source": r["source"], "at": r["at"]}
    return out


def marketing_consent(scope: TenantScope) -> sa.ColumnElement[bool]:
    """SQL: the contact's latest marketing record in the ledger is ``granted`` (for audiences)."""
    latest = (
        sa.select(consent_records.c.action)
        .where(
            scope.owns(consent_records),
            consent_records.c.phone_index == contacts.c.phone_index,
            consent_records.c.purpose == "marketing",
        )
        .order_by(consent_records.c.at.desc(), consent_records.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return latest == "granted"


def record_consent(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    *,
    phone: str,
    purpose: str,
    action: str,
    source: str,
    proof: str,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Append a grant or a revocation to the ledger. A grant does not lift an opt-out or a
    complaint: those are the suppression list's and stay until the person asks otherwise."""
    e164 = e164_or_error(phone)
    if not proof.strip():
        raise ValidationFailed("Consent needs its proof", "同意记录需要提供证明")
    suppression.record_consent(
        conn,
        clock,
        keyring,
        [
            suppression.ConsentChange(
                tenant_id, e164, purpose, action, source[:32], proof[:2000], actor, ip
            )
        ],
    )
    if action == "revoked" and purpose == "marketing":
        suppression.add(
            conn,
            clock,
            keyring,
            [suppression.NewSuppression(tenant_id, e164, "opt_out", "consent", "consent revoked")],
        )
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    return {"to": mask_phone(e164), "consent": consent_of(conn, tenant_id, index)}


# -- data rights -----------------------------------------------------------------------------------


def export(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, phone: str, actor: str
) -> dict[str, Any]:
    """Everything stored about one number, in clear: the person's copy of their data."""
    from hongyan.contacts.importer import birthday_context, name_context

    e164 = e164_or_error(phone)
    scope = TenantScope(tenant_id)
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    cid = find_id(conn, keyring, tenant_id, e164)
    out: dict[str, Any] = {"phone": e164, "contact": None}
    if cid is not None:
        contact = get_contact(conn, tenant_id, cid)
        secret = conn.execute(
            scope.select(contacts, contacts.c.name_cipher, contacts.c.birthday_cipher).where(
                contacts.c.id == cid
            )
        ).one()
        contact["name"] = (
            keyring.decrypt(bytes(secret.name_cipher), name_context(tenant_id))
            if secret.name_cipher
            else None
        )
        contact["birthday"] = (
            keyring.decrypt(bytes(secret.birthday_cipher), birthday_context(tenant_id))
            if secret.birthday_cipher
            else None
        )
        contact.pop("phone_masked", None)
        contact.pop("name_masked", None)
        out["contact"] = contact
        events = conn.execute(
            scope.select(contact_events)
            .where(contact_events.c.contact_id == cid)
            .order_by(contact_events.c.occurred_at)
        ).mappings()
        out["events"] = [
            {k: v for k, v in e.items() if k not in ("tenant_id", "contact_id", "id")}
            for e in events
        ]
    consent = conn.execute(
        scope.select(consent_records)
        .where(consent_records.c.phone_index == index)
        .order_by(consent_records.c.at, consent_records.c.id)
    ).mappings()
    out["consent_records"] = [
        {k: v for k, v in r.items() if k not in ("tenant_id", "phone_index", "id")} for r in consent
    ]
    supp = conn.execute(
        scope.select(
            suppressions,
            suppressions.c.reason,
            suppressions.c.source,
            suppressions.c.created_at,
            suppressions.c.expires_at,
        ).where(suppressions.c.phone_index == index)
    ).mappings()
    out["suppressions"] = [dict(r) for r in supp]
    sent = conn.execute(
        scope.select(
            messages,
            messages.c.id,
            messages.c.category,
            messages.c.body,
            messages.c.state,
            messages.c.created_at,
        )
        .where(messages.c.dest_index == index)
        .order_by(messages.c.id)
    ).mappings()
    out["messages"] = [dict(r) for r in sent]
    if cid is None and not out["consent_records"] and not out["messages"]:
        raise NotFound("Nothing is stored for this number", "没有该号码的任何数据")
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.export",
        target=f"contact:{cid}" if cid else f"number:{mask_phone(e164)}",
    )
    return out


@dataclass
class Forgotten:
    masked: str
    contact_id: int | None
    events: int
    messages: int
    replies: int


ERASED = "已删除"


def forget(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, phone: str, actor: str
) -> Forgotten:
    """Erase a person's data (PIPL Art. 47): the contact, its tags, events, aggregates and
    replies; the number in sent messages' records and in suppression entries. What stays is
    what the law and the person's own choice require: the consent ledger (with a revocation
    appended) and a suppression entry keyed by blind index only, so the number is never
    messaged again by this tenant's marketing. An audit record says it was done."""
    e164 = e164_or_error(phone)
    scope = TenantScope(tenant_id)
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    cid = find_id(conn, keyring, tenant_id, e164)
    events = 0
    if cid is not None:
        events = conn.execute(
            scope.delete(contact_events).where(contact_events.c.contact_id == cid)
        ).rowcount
        # audience_members has no foreign key to cascade (see db/tables.py)
        for table in (contact_tags, contact_interests, contact_activity, audience_members):
            conn.execute(scope.delete(table).where(table.c.contact_id == cid))
        conn.execute(scope.delete(contacts).where(contacts.c.id == cid))
    replies = conn.execute(
        scope.delete(inbound_messages).where(inbound_messages.c.phone_index == index)
    ).rowcount
    # Send records stay (billing, delivery statistics) without a way back to the number.
    sent = conn.execute(
        scope.update(messages)
        .where(messages.c.dest_index == index)
        .values(
            dest_cipher=keyring.encrypt("", suppression.phone_context(tenant_id)),
            dest_masked=ERASED,
        )
    ).rowcount
    record_consent_rows = [
        suppression.ConsentChange(
            tenant_id, e164, purpose, "revoked", "erasure", "data erasure request", actor
        )
        for purpose in ("marketing", "notification")
    ]
    suppression.record_consent(conn, clock, keyring, record_consent_rows)
    suppression.add(
        conn,
        clock,
        keyring,
        [suppression.NewSuppression(tenant_id, e164, "opt_out", "erasure", "data erased")],
    )
    conn.execute(
        scope.update(suppressions)
        .where(suppressions.c.phone_index == index)
        .values(phone_cipher=None, phone_masked=ERASED)
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.forget",
        target=f"contact:{cid}" if cid else "contact:none",
        detail={"events": events, "messages": sent, "replies": replies},
    )
    return Forgotten(ERASED, cid, events, sent, replies)


def purge_consent(conn: Connection, clock: Clock, tenant_id: int) -> int:
    """Delete the ledger of numbers whose latest record, per purpose, is a revocation older
    than three years (the suppression list keeps stopping them). Returns rows deleted."""
    scope = TenantScope(tenant_id)
    cutoff = clock.now() - CONSENT_KEEP
    later = consent_records.alias("later")
    newest = scope.select(
        consent_records, consent_records.c.phone_index, consent_records.c.purpose
    ).where(
        consent_records.c.action == "revoked",
        consent_records.c.at < cutoff,
        ~sa.exists().where(
            later.c.tenant_id == tenant_id,
            later.c.phone_index == consent_records.c.phone_index,
            later.c.purpose == consent_records.c.purpose,
            later.c.at > consent_records.c.at,
        ),
    )
    doomed = conn.execute(newest).all()
    deleted = 0
    for r in doomed:
        deleted += conn.execute(
            scope.delete(consent_records).where(
                consent_records.c.phone_index == r.phone_index,
                consent_records.c.purpose == r.purpose,
            )
        ).rowcount
    return deleted


# -- uploads imported in the background (API, console) -------------------------------------------


def uploads_dir(runtime: Runtime, tenant_id: int) -> Path:
    folder = runtime.settings.var_dir / "imports" / str(tenant_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def save_upload(runtime: Runtime, tenant_id: int, stream: IO[bytes], max_bytes: int) -> Path:
    """Keep an uploaded file (mode 0600) until its import has run; ``retention run`` removes
    what was left behind."""
    import os
    import secrets

    path = uploads_dir(runtime, tenant_id) / secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                path.unlink(missing_ok=True)
                raise ValidationFailed(
                    f"The file is larger than {max_bytes // 2**20} MB",
                    f"文件超过 {max_bytes // 2**20} MB",
                )
            out.write(chunk)
    return path


def upload_path(runtime: Runtime, tenant_id: int, token: str) -> Path:
    if not (len(token) == 32 and all(c in "0123456789abcdef" for c in token)):
        raise NotFound("No such upload", "找不到上传的文件")
    path = uploads_dir(runtime, tenant_id) / token
    if not path.is_file():
        raise NotFound("The uploaded file is gone; upload it again", "上传的文件已失效，请重新上传")
    return path


@dataclass
class Preview:
    kind: str
    encoding: str | None
    header: list[str]
    rows: list[list[str]]
    mapping: dict[str, str]
    problem: ValidationFailed | None = None  # why the import would not start as mapped


def preview(path: Path, given: dict[str, str] | None = None, rows: int = 5) -> Preview:
    """The first rows and the mapping the import would use, before anything is stored."""
    from itertools import islice

    from hongyan.contacts.fields import guess_field

    with path.open("rb") as stream:
        table = open_table(stream, path.stat().st_size)
        sample = [cells for _line, cells in islice(table.rows, rows)]
    problem = None
    try:
        plan = importer.plan_mapping(table.header, given)
        mapping = importer.describe_mapping(table.header, plan)
    except ValidationFailed as exc:
        problem = exc
        mapping = {h: (given or {}).get(h) or guess_field(h) or "ignore" for h in table.header}
    return Preview(table.kind, table.encoding, table.header, sample, mapping, problem)


def create_import(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    path: Path,
    filename: str,
    options: importer.ImportOptions,
) -> int:
    """The import's row, made in the caller's transaction; run it with
    :func:`run_in_background` once that transaction has committed."""
    options.check()
    with path.open("rb") as stream:
        digest = sha256_of(stream)
    return importer.create_job(
        conn,
        clock,
        tenant_id,
        kind="contacts",
        filename=filename,
        options=options.as_json(),
        actor=options.actor,
        sha256=digest,
    )


def kept_upload(runtime: Runtime, tenant_id: int, import_id: int) -> Path:
    """Where an uploaded file lies while its import runs, and after it if it failed half-way
    (so it can be resumed, until ``retention run`` removes uploads a day old)."""
    return uploads_dir(runtime, tenant_id) / f"import-{import_id}"


def run_in_background(
    runtime: Runtime,
    tenant_id: int,
    import_id: int,
    path: Path,
    filename: str,
    options: importer.ImportOptions,
    *,
    resume: bool = False,
) -> None:
    """Run import ``import_id`` in a thread (``resume``: go on from its last committed batch).
    The file is moved to :func:`kept_upload` first, and deleted when the import ends, unless it
    failed after storing some rows: then it stays there for :func:`resume_in_background`, which
    takes it away while the resumed run reads it (so a second resume finds nothing to take)."""
    import logging
    import threading

    kept = kept_upload(runtime, tenant_id, import_id)
    if not resume:  # (a resumed run reads the file its resume took, and puts it back)
        path.replace(kept)
        path = kept

    def work() -> None:
        try:
            with path.open("rb") as stream:
                import_stream(
                    runtime, tenant_id, stream, filename, options, import_id=import_id,
                    resume=resume,
                )  # fmt: skip
        except Exception:
            logging.getLogger("hongyan.contacts").info("import %s failed", import_id)
        finally:
            if _resumable(runtime, tenant_id, import_id):
                path.replace(kept)
            else:
                path.unlink(missing_ok=True)

    threading.Thread(target=work, name=f"import-{import_id}", daemon=True).start()


def _resumable(runtime: Runtime, tenant_id: int, import_id: int) -> bool:
    with runtime.engine.connect() as conn:
        job = importer.get_job(conn, tenant_id, import_id)
    return job["state"] == "failed" and bool((job["result"] or {}).get("line"))


def resume_in_background(runtime: Runtime, tenant_id: int, import_id: int, actor: str) -> None:
    """Resume an uploaded import that failed after storing some rows, from its kept file (the
    API's ``POST …/imports/{id}/resume`` and the console's button). Two requests at once: the
    first takes the file (an atomic rename), the second finds it gone."""
    with runtime.engine.connect() as conn:
        job = importer.get_job(conn, tenant_id, import_id)
    if job["kind"] != "contacts" or not _resumable(runtime, tenant_id, import_id):
        raise ValidationFailed(
            "Only an import that failed after storing some rows can be resumed",
            "只有中途失败、已保存部分数据的导入才能继续",
        )
    kept = kept_upload(runtime, tenant_id, import_id)
    taken = kept.with_name(f"{kept.name}.resuming")
    try:
        kept.rename(taken)
    except FileNotFoundError:
        raise ValidationFailed(
            "The uploaded file is no longer kept (a day at most, or it is being resumed); "
            "import it again: rows already stored are recognised",
            "上传的文件已不再保留（最多一天，或正在继续导入）；请重新导入，已保存的行会被识别",
        ) from None
    taken.touch()  # kept a day from the last attempt
    with runtime.engine.begin() as conn:  # pending until its thread runs it (a poll says so)
        conn.execute(
            TenantScope(tenant_id)
            .update(importer.contact_imports)
            .where(
                importer.contact_imports.c.id == import_id,
                importer.contact_imports.c.state == "failed",
            )
            .values(state="pending")
        )
    options = importer.ImportOptions(actor=actor)  # the rest is the job's own (import_stream)
    run_in_background(runtime, tenant_id, import_id, taken, job["filename"], options, resume=True)

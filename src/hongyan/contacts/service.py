"""Contacts as the rest of the platform uses them: import a file, list, look up, record consent,
export a person's data on request and erase it (data rights).

Numbers leave this module masked, except in :func:`export`, which is the person's own copy of
their data (PIPL Art. 45) and is written to the audit log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    audiences,
    clicks,
    consent_records,
    contact_activity,
    contact_events,
    contact_import_errors,
    contact_interests,
    contact_locations,
    contact_preferences,
    contact_tags,
    contacts,
    conversions,
    coupon_pools,
    coupon_rejections,
    coupons,
    inbound_messages,
    journey_enrolments,
    journeys,
    links,
    messages,
    suppressions,
    webhook_deliveries,
)
from hongyan.dispatch.states import Reason, State
from hongyan.errors import HongyanError, NotFound, ValidationFailed
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
    claimed: bool = False,
) -> importer.ImportResult:
    """Import a seekable binary stream (a file on disk, an upload); returns the result.
    ``claimed``: a resume whose job :func:`resume_in_background` already made ``pending``.

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
        claimed=claimed,
        pipeline=importer.Pipeline(
            str(path),
            size,
            (runtime.settings.data_keys, runtime.settings.active_key, runtime.settings.index_key),
            runtime.settings.import_memory_mb,
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

ERASED = "已删除"
#: The webhook events whose stored payload copies a reply's text and masked number.
REPLY_EVENTS = ("message.reply", "message.opt_out")


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _plain(row: Any, *drop: str) -> dict[str, Any]:
    """A row as the export shows it: without the tenant and the columns named."""
    return {k: v for k, v in dict(row).items() if k != "tenant_id" and k not in drop}


def _order_keys(conn: Connection, scope: TenantScope, cid: int) -> set[str]:
    """The keys of the contact's orders (as attribution writes them on conversions and
    rejections): the order id, else ``event:<event id>``."""
    from hongyan.tracking.attribution import order_key

    ev = contact_events.c
    found = conn.execute(
        scope.select(contact_events, ev.order_id, ev.event_id).where(
            ev.contact_id == cid, ev.kind == "order"
        )
    )
    keys = {order_key(r.order_id, r.event_id) for r in found}
    c = conversions.c
    keys |= set(
        conn.execute(scope.select(conversions, c.order_key).where(c.contact_id == cid)).scalars()
    )
    return keys


def _replies_of(conn: Connection, scope: TenantScope, index: bytes) -> list[dict[str, Any]]:
    i = inbound_messages.c
    rows = conn.execute(
        scope.select(
            inbound_messages, i.id, i.text, i.kind, i.destination, i.channel, i.message_id,
            i.received_at,
        )
        .where(i.phone_index == index)
        .order_by(i.received_at, i.id)
    ).mappings()  # fmt: skip
    return [dict(r) for r in rows]


def export(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, phone: str, actor: str
) -> dict[str, Any]:
    """Everything stored about one number, in clear: the person's copy of their data
    (PIPL Art. 45), from every table :func:`forget` erases or unlinks:

    * by the contact: the contact (name and birthday decrypted, tags, activity, interests,
      current consent), ``events``, ``preferences``, ``location``, ``audiences`` (snapshots the
      contact is in, and the verdict), ``journeys`` (enrolments), ``links`` (their short links),
      ``clicks``, ``coupons``, ``conversions`` (orders attributed to a campaign or journey) and
      ``coupon_rejections`` (their orders' refused coupons);
    * by the number: ``consent_records``, ``suppressions``, ``messages`` (sent to it, with their
      text), ``replies`` (what the person sent back) and ``refused_import_rows`` (rows of the
      tenant's imports refused for another cell than the number, with their cells).

    Sections by the contact are empty when the number has no contact. Audited."""
    from hongyan.contacts.importer import birthday_context, import_row_context, name_context

    e164 = e164_or_error(phone)
    scope = TenantScope(tenant_id)
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    cid = find_id(conn, keyring, tenant_id, e164)
    out: dict[str, Any] = {
        "phone": e164,
        "contact": None,
        "events": [],
        "preferences": None,
        "location": None,
        "audiences": [],
        "journeys": [],
        "links": [],
        "clicks": [],
        "coupons": [],
        "conversions": [],
        "coupon_rejections": [],
    }
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
        ci = contact_interests.c
        contact["interests"] = [  # every one (the contact's view shows the first 20)
            _plain(r, "contact_id")
            for r in conn.execute(
                scope.select(contact_interests)
                .where(ci.contact_id == cid)
                .order_by(ci.weight.desc(), ci.tag)
            ).mappings()
        ]
        out["contact"] = contact
        out.update(_contact_sections(conn, scope, cid))
    consent = conn.execute(
        scope.select(consent_records)
        .where(consent_records.c.phone_index == index)
        .order_by(consent_records.c.at, consent_records.c.id)
    ).mappings()
    out["consent_records"] = [_plain(r, "phone_index", "id") for r in consent]
    supp = conn.execute(
        scope.select(
            suppressions,
            suppressions.c.reason,
            suppressions.c.scope,
            suppressions.c.source,
            suppressions.c.detail,
            suppressions.c.created_at,
            suppressions.c.expires_at,
        ).where(suppressions.c.phone_index == index)
    ).mappings()
    out["suppressions"] = [dict(r) for r in supp]
    m = messages.c
    sent = conn.execute(
        scope.select(
            messages, m.id, m.category, m.source, m.campaign_id, m.variant, m.body, m.state,
            m.created_at, m.submitted_at, m.done_at,
        )
        .where(m.dest_index == index)
        .order_by(m.id)
    ).mappings()  # fmt: skip
    out["messages"] = [dict(r) for r in sent]
    out["replies"] = _replies_of(conn, scope, index)
    e = contact_import_errors.c
    refused = conn.execute(
        scope.select(contact_import_errors, e.import_id, e.line, e.reason, e.raw_cipher)
        .where(e.phone_index == index)
        .order_by(e.import_id, e.line)
    ).all()
    row_ctx = import_row_context(tenant_id)
    out["refused_import_rows"] = [
        {
            "import_id": r.import_id,
            "line": r.line,
            "reason": r.reason,
            "cells": json.loads(keyring.decrypt(bytes(r.raw_cipher), row_ctx)),
        }
        for r in refused
    ]
    held = ("consent_records", "suppressions", "messages", "replies", "refused_import_rows")
    if cid is None and not any(out[name] for name in held):
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


def _contact_sections(conn: Connection, scope: TenantScope, cid: int) -> dict[str, Any]:
    """The export's sections kept by contact id (see :func:`export`)."""
    out: dict[str, Any] = {}
    ev = contact_events.c
    out["events"] = [
        _plain(e, "contact_id", "id")
        for e in conn.execute(
            scope.select(contact_events).where(ev.contact_id == cid).order_by(ev.occurred_at)
        ).mappings()
    ]
    p = contact_preferences.c
    pref = conn.execute(
        scope.select(contact_preferences, p.frequency, p.source, p.updated_at).where(
            p.contact_id == cid
        )
    ).mappings()
    out["preferences"] = next((dict(r) for r in pref), None)
    loc = contact_locations.c
    where = conn.execute(
        scope.select(
            contact_locations, loc.lat, loc.lon, loc.source, loc.place, loc.updated_at
        ).where(loc.contact_id == cid)
    ).mappings()
    out["location"] = next((dict(r) for r in where), None)
    am, a = audience_members.c, audiences.c
    out["audiences"] = [
        dict(r)
        for r in conn.execute(
            scope.select(
                audience_members, am.audience_id, a.name, a.purpose, a.campaign_ref, a.taken_at,
                am.status,
            )
            .join_from(audience_members, audiences, a.id == am.audience_id)
            .where(am.contact_id == cid)
            .order_by(a.taken_at, am.audience_id)
        ).mappings()
    ]  # fmt: skip
    e, j = journey_enrolments.c, journeys.c
    out["journeys"] = [
        dict(r)
        for r in conn.execute(
            scope.select(
                journey_enrolments, e.journey_id, j.name.label("journey"), e.event_key, e.state,
                e.step, e.outcome, e.entered_at, e.next_at, e.updated_at,
            )
            .join_from(journey_enrolments, journeys, j.id == e.journey_id)
            .where(e.contact_id == cid)
            .order_by(e.entered_at, e.id)
        ).mappings()
    ]  # fmt: skip
    lk = links.c
    out["links"] = [
        _plain(r, "contact_id", "message_id")
        for r in conn.execute(
            scope.select(links).where(lk.contact_id == cid).order_by(lk.created_at, lk.id)
        ).mappings()
    ]
    ck = clicks.c
    out["clicks"] = [
        {
            **_plain(r, "contact_id", "ip_hash"),
            # a keyed hash of the address, never the address (see db/tables.py)
            "ip_hash": bytes(r["ip_hash"]).hex() if r["ip_hash"] is not None else None,
        }
        for r in conn.execute(
            scope.select(clicks).where(ck.contact_id == cid).order_by(ck.at, ck.id)
        ).mappings()
    ]
    cp, pool = coupons.c, coupon_pools.c
    out["coupons"] = [
        dict(r)
        for r in conn.execute(
            scope.select(
                coupons, cp.id, cp.code, pool.name.label("pool"), cp.state, cp.campaign_id,
                cp.journey_id, cp.variant, cp.issued_at, cp.expires_at, cp.redeemed_at,
                cp.order_key,
            )
            .join_from(coupons, coupon_pools, pool.id == cp.pool_id)
            .where(cp.contact_id == cid)
            .order_by(cp.issued_at, cp.id)
        ).mappings()
    ]  # fmt: skip
    cv = conversions.c
    out["conversions"] = [
        _plain(r, "contact_id", "number_province", "number_city", "carrier")
        for r in conn.execute(
            scope.select(conversions).where(cv.contact_id == cid).order_by(cv.ordered_at, cv.id)
        ).mappings()
    ]
    keys = _order_keys(conn, scope, cid)
    rj = coupon_rejections.c
    out["coupon_rejections"] = (
        [
            _plain(r, "id")
            for r in conn.execute(
                scope.select(coupon_rejections)
                .where(rj.order_key.in_(sorted(keys)))
                .order_by(rj.at, rj.id)
            ).mappings()
        ]
        if keys
        else []
    )
    return out


@dataclass
class Forgotten:
    masked: str
    contact_id: int | None
    events: int
    messages: int
    replies: int
    cancelled: int = 0  # messages not yet sent, cancelled
    consent_records: int = 0  # earlier records deleted (the erasure's revocations stay)
    links: int = 0
    clicks: int = 0
    coupons: int = 0
    conversions: int = 0
    enrolments: int = 0
    refused_rows: int = 0  # an import's refused rows that held the number (deleted)


def unlink_clicks(conn: Connection, scope: TenantScope, where: sa.ColumnElement[bool]) -> int:
    """Unlink the clicks ``where`` selects from their person: no contact, no address hash, no
    user agent, the time to the hour. What a campaign's or journey's report reads stays:
    the link (distinct links are unique clicks), campaign or journey, variant, bot class,
    place and hour."""
    c = clicks.c
    found = conn.execute(scope.select(clicks, c.id, c.at).where(where)).all()
    if found:
        conn.execute(
            scope.update(clicks)
            .where(c.id == sa.bindparam("rid"))
            .values(contact_id=None, ip_hash=None, user_agent="", at=sa.bindparam("hour")),
            [{"rid": r.id, "hour": _hour(r.at)} for r in found],
        )
    return len(found)


def _unlink_tracking(
    conn: Connection, clock: Clock, scope: TenantScope, cid: int, place: Sequence[Any]
) -> dict[str, int]:
    """Unlink the contact's links, clicks, coupons, conversions and journey enrolments (see
    :func:`forget`); ``place``: the contact's number province, city and carrier."""
    now = clock.now()
    done: dict[str, int] = {}
    done["links"] = conn.execute(
        scope.update(links)
        .where(links.c.contact_id == cid)
        .values(contact_id=None, message_id=None)
    ).rowcount
    done["clicks"] = unlink_clicks(conn, scope, clicks.c.contact_id == cid)
    cp = coupons.c
    found = conn.execute(
        scope.select(coupons, cp.id, cp.redeemed_at).where(cp.contact_id == cid)
    ).all()
    if found:
        conn.execute(
            scope.update(coupons)
            .where(cp.id == sa.bindparam("rid"))
            .values(
                contact_id=None,
                code=sa.bindparam("erased"),
                order_key=None,
                redeemed_at=sa.bindparam("day"),
            ),
            [
                {
                    "rid": r.id,
                    "erased": f"{ERASED}:{r.id}",
                    "day": _day(r.redeemed_at) if r.redeemed_at else None,
                }
                for r in found
            ],
        )
    done["coupons"] = len(found)
    cv = conversions.c
    found = conn.execute(
        scope.select(conversions, cv.id, cv.ordered_at, cv.created_at).where(cv.contact_id == cid)
    ).all()
    if found:
        province, city, carrier = place
        conn.execute(
            scope.update(conversions)
            .where(cv.id == sa.bindparam("rid"))
            .values(
                contact_id=None,
                order_key=sa.bindparam("erased"),
                event_id=ERASED,
                ordered_at=sa.bindparam("ordered"),
                created_at=sa.bindparam("created"),
                number_province=province,
                number_city=city,
                carrier=carrier,
            ),
            [
                {
                    "rid": r.id,
                    "erased": f"{ERASED}:{r.id}",
                    "ordered": _day(r.ordered_at),
                    "created": _day(r.created_at),
                }
                for r in found
            ],
        )
    done["conversions"] = len(found)
    e = journey_enrolments.c
    found = conn.execute(
        scope.select(journey_enrolments, e.id, e.state, e.outcome, e.entered_at, e.next_at).where(
            e.contact_id == cid
        )
    ).all()
    if found:
        conn.execute(
            scope.update(journey_enrolments)
            .where(e.id == sa.bindparam("rid"))
            .values(
                contact_id=None,
                event_key=ERASED,
                state=sa.bindparam("st"),
                outcome=sa.bindparam("oc"),
                entered_at=sa.bindparam("entered"),
                next_at=sa.bindparam("nx"),
                updated_at=now,
            ),
            [
                {
                    "rid": r.id,
                    # an active one ends here: there is nobody to send its next step to
                    "st": "exited" if r.state == "active" else r.state,
                    "oc": "erased" if r.state == "active" else r.outcome,
                    "entered": _day(r.entered_at),
                    "nx": _day(r.next_at),
                }
                for r in found
            ],
        )
    done["enrolments"] = len(found)
    return done


def _erase_reply_copies(conn: Connection, scope: TenantScope, reply_ids: Sequence[int]) -> int:
    """The webhook deliveries of the deleted replies (``message.reply``, ``message.opt_out``)
    keep the event, without the reply's text or masked number. Returns deliveries changed."""
    d = webhook_deliveries.c
    reply_id = d.payload[("reply", "id")].as_integer()
    changed = 0
    for start in range(0, len(reply_ids), 500):
        chunk = list(reply_ids[start : start + 500])
        found = conn.execute(
            scope.select(webhook_deliveries, d.id, d.payload).where(
                d.event.in_(REPLY_EVENTS), reply_id.in_(chunk)
            )
        ).all()
        rows = []
        for r in found:
            payload = dict(r.payload)
            reply = {**payload["reply"], "text": ERASED, "from_masked": ERASED, "from": None}
            rows.append({"rid": r.id, "body": {**payload, "reply": reply}})
        if rows:
            conn.execute(
                scope.update(webhook_deliveries)
                .where(d.id == sa.bindparam("rid"))
                .values(payload=sa.bindparam("body")),
                rows,
            )
        changed += len(rows)
    return changed


def forget(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, phone: str, actor: str
) -> Forgotten:
    """Erase a person's data (PIPL Art. 47). What stays is only what the law, the person's own
    choice and the tenant's aggregate figures need, and none of it leads back to the person:

    * **deleted**: the contact, its tags, events, aggregates (activity, interests),
      preferences, location and audience memberships; the number's replies (and, in the
      webhook deliveries that carried them, their text and masked number); every earlier
      consent record of the number (grants with their proof and IP, earlier revocations); the
      refused coupons of the person's orders (``coupon_rejections``: an order id and a code);
      the rows of imports refused for another cell than the number (a bad birthday, a formula),
      found by the number's blind index (``contact_import_errors.phone_index``).
    * **kept, unlinked** (contact id null), for the campaign and journey reports:
      send records (billing, delivery statistics: state, parts, channel, cost, the number's
      province, city and carrier) with the number (an encrypted empty string, ``已删除``
      shown), the text (``已删除``: a campaign's text holds the person's name, link and coupon),
      the contact id, the API's idempotency key and the time zone removed; messages not yet
      sent are cancelled. Links (the random code, not derived from the person, keeps
      redirecting) lose their contact and message. Clicks lose the address hash and user
      agent, and their time is cut to the hour (the hourly charts read no finer). Coupons
      keep their pool, state and campaign (the pool's counts) but their code (the one the
      person holds) becomes ``已删除:<id>`` and the order key goes. Conversions keep campaign,
      variant, method and amount (conversions and revenue) and the buyer's number province,
      city and carrier (the report's places); the order key (the tenant's order id) becomes
      ``已删除:<id>``, the event id ``已删除``, the times are cut to the day. Journey
      enrolments keep journey, step, state and outcome (the journey's counts; an active one
      exits, outcome ``erased``); the event key (an event id, or the birthday) goes and the
      times are cut to the day.
    * **appended**: a ``revoked`` record for both purposes (source ``erasure``, no IP) and a
      suppression entry (``opt_out``, source ``erasure``); every suppression entry of the
      number keeps only its blind index (no ciphertext, no detail), so the number is never
      messaged again by this tenant's marketing. An audit record says it was done.

    Not reached: an import's rows refused because their number did not read as one (sealed
    whole, not searchable by the number they meant; the retention run deletes every refused row
    30 days after its import), and rows refused before migration 0023."""
    e164 = e164_or_error(phone)
    scope = TenantScope(tenant_id)
    index = keyring.blind_index(e164, suppression.phone_context(tenant_id))
    cid = find_id(conn, keyring, tenant_id, e164)
    now = clock.now()
    events = 0
    unlinked: dict[str, int] = {}
    if cid is not None:
        place = conn.execute(
            scope.select(
                contacts, contacts.c.number_province, contacts.c.number_city, contacts.c.carrier
            ).where(contacts.c.id == cid)
        ).one()
        keys = _order_keys(conn, scope, cid)
        if keys:
            rj = coupon_rejections.c
            conn.execute(scope.delete(coupon_rejections).where(rj.order_key.in_(sorted(keys))))
        unlinked = _unlink_tracking(conn, clock, scope, cid, tuple(place))
        events = conn.execute(
            scope.delete(contact_events).where(contact_events.c.contact_id == cid)
        ).rowcount
        # audience_members has no foreign key to cascade (see db/tables.py); the others do,
        # and are deleted here all the same, so nothing depends on the cascade.
        for table in (
            contact_tags, contact_interests, contact_activity, contact_preferences,
            contact_locations, audience_members,
        ):  # fmt: skip
            conn.execute(scope.delete(table).where(table.c.contact_id == cid))
        conn.execute(scope.delete(contacts).where(contacts.c.id == cid))
    refused = conn.execute(
        scope.delete(contact_import_errors).where(contact_import_errors.c.phone_index == index)
    ).rowcount
    reply_ids = [r["id"] for r in _replies_of(conn, scope, index)]
    replies = conn.execute(
        scope.delete(inbound_messages).where(inbound_messages.c.phone_index == index)
    ).rowcount
    _erase_reply_copies(conn, scope, reply_ids)
    m = messages.c
    # Not sent yet: cancelled (its text and number are about to go).
    cancelled = conn.execute(
        scope.update(messages)
        .where(m.dest_index == index, m.state.in_((State.PLANNED.value, State.HELD.value)))
        .values(state=State.CANCELLED.value, reason=Reason.SUPPRESSED.value, done_at=now)
    ).rowcount
    # Send records stay (billing, delivery statistics) without a way back to the person.
    sent = conn.execute(
        scope.update(messages)
        .where(m.dest_index == index)
        .values(
            dest_cipher=keyring.encrypt("", suppression.phone_context(tenant_id)),
            dest_masked=ERASED,
            body=ERASED,
            contact_id=None,
            idempotency_key=None,
            time_zone=None,
        )
    ).rowcount
    # The ledger keeps only the erasure's own revocations (no IP, no proof of the person's).
    earlier = conn.execute(
        scope.delete(consent_records).where(consent_records.c.phone_index == index)
    ).rowcount
    record_consent_rows = [
        suppression.ConsentChange(
            tenant_id, e164, purpose, "revoked", "erasure", "data erasure request", actor
        )
        for purpose in ("marketing", "notification")
    ]
    suppression.record_consent(conn, clock, keyring, record_consent_rows)
    erased = suppression.NewSuppression(tenant_id, e164, "opt_out", suppression.ERASURE, None)
    suppression.add(conn, clock, keyring, [erased])
    conn.execute(
        scope.update(suppressions)
        .where(suppressions.c.phone_index == index)
        .values(phone_cipher=None, phone_masked=ERASED, detail=None)
    )
    # An earlier opt-out (a reply) becomes the erasure's: imports and events know the number
    # as erased by it, and since when.
    conn.execute(
        scope.update(suppressions)
        .where(suppressions.c.phone_index == index, suppressions.c.reason == "opt_out")
        .values(source=suppression.ERASURE, created_at=clock.now())
    )
    done = Forgotten(
        ERASED, cid, events, sent, replies, cancelled=cancelled, consent_records=earlier,
        refused_rows=refused, **unlinked,
    )  # fmt: skip
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.forget",
        target=f"contact:{cid}" if cid else "contact:none",
        detail={k: v for k, v in done.__dict__.items() if isinstance(v, int) and k != "contact_id"},
    )
    return done


def purge_consent(conn: Connection, clock: Clock, tenant_id: int) -> int:
    """Purge the ledger of each number and purpose whose latest record is a revocation older
    than three years: the records before that revocation go; the revocation itself goes only
    where a standing opt-out keeps stopping the number (marketing: every marketing revocation
    writes one). A notification revocation stays, so no import grants it again. "Latest" is by
    time, then by id, as the current consent is derived, and only records up to the one judged
    are deleted (a record written meanwhile stays). Returns rows deleted."""
    scope = TenantScope(tenant_id)
    now = clock.now()
    c = consent_records.c
    later = consent_records.alias("later")
    newest = scope.select(consent_records, c.phone_index, c.purpose, c.at, c.id).where(
        c.action == "revoked",
        c.at < now - CONSENT_KEEP,
        ~sa.exists().where(
            later.c.tenant_id == tenant_id,
            later.c.phone_index == c.phone_index,
            later.c.purpose == c.purpose,
            sa.or_(later.c.at > c.at, sa.and_(later.c.at == c.at, later.c.id > c.id)),
        ),
    )
    doomed = conn.execute(newest).all()
    s = suppressions.c
    deleted = 0
    for at in range(0, len(doomed), 500):
        chunk = doomed[at : at + 500]
        opted_out = {
            bytes(i)
            for i in conn.execute(
                scope.select(suppressions, s.phone_index).where(
                    s.reason == "opt_out",
                    sa.or_(s.expires_at.is_(None), s.expires_at > now),
                    s.phone_index.in_({bytes(r.phone_index) for r in chunk}),
                )
            ).scalars()
        }
        for r in chunk:
            before = sa.or_(c.at < r.at, sa.and_(c.at == r.at, c.id < r.id))
            if r.purpose == "marketing" and bytes(r.phone_index) in opted_out:
                before = sa.or_(before, c.id == r.id)
            deleted += conn.execute(
                scope.delete(consent_records).where(
                    c.phone_index == r.phone_index, c.purpose == r.purpose, before
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
        nonlocal path
        try:
            with path.open("rb") as stream:
                import_stream(
                    runtime, tenant_id, stream, filename, options, import_id=import_id,
                    resume=resume, claimed=resume,
                )  # fmt: skip
        except Exception as exc:
            logging.getLogger("hongyan.contacts").info("import %s failed", import_id)
            if resume:  # failed before its run took the job: back to failed, file kept
                with contextlib.suppress(OSError):  # first: a job that says so has its file
                    path.replace(kept)
                    path = kept
                error = (
                    exc.body()
                    if isinstance(exc, HongyanError)
                    else {
                        "code": "import_failed",
                        "message": {
                            "en": "The resumed import could not start; it can be resumed again",
                            "zh": "继续导入未能开始，可再次继续导入",
                        },
                    }
                )
                with runtime.engine.begin() as conn:
                    conn.execute(
                        TenantScope(tenant_id)
                        .update(importer.contact_imports)
                        .where(
                            importer.contact_imports.c.id == import_id,
                            importer.contact_imports.c.state == "pending",
                        )
                        .values(state="failed", error=error)
                    )
        finally:
            if not _resumable(runtime, tenant_id, import_id):
                path.unlink(missing_ok=True)
            elif path != kept:  # (a resume may already have taken a first run's file)
                path.replace(kept)

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
    import time

    kept = kept_upload(runtime, tenant_id, import_id)
    taken = kept.with_name(f"{kept.name}.resuming")
    # A resumed run that failed says so a moment before its thread puts the file back: wait
    # that moment rather than answer that the file is gone.
    deadline = time.monotonic() + 5
    while not kept.exists() and taken.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
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
        claimed = conn.execute(
            TenantScope(tenant_id)
            .update(importer.contact_imports)
            .where(
                importer.contact_imports.c.id == import_id,
                importer.contact_imports.c.state == "failed",
            )
            .values(state="pending")
        ).rowcount
    if not claimed:  # the CLI's --resume took it meanwhile: the file goes back
        taken.replace(kept)
        raise ValidationFailed(
            "This import is already running or being resumed",
            "该导入正在进行或已在继续导入",
        )
    options = importer.ImportOptions(actor=actor)  # the rest is the job's own (import_stream)
    run_in_background(runtime, tenant_id, import_id, taken, job["filename"], options, resume=True)

"""Behaviour events (orders, browsing, favourites, carts, registrations, signed-for orders) and
the per-contact aggregates kept up to date as they arrive.

An event is idempotent by ``(tenant, event_id)``: sent twice, it is stored and counted once
(``INSERT … ON CONFLICT DO NOTHING RETURNING``, so only the events that were really new move
the aggregates, even when two requests race). An id sent again with other content (kind,
number, time, order, amount, coupon, tags, properties) is a conflict: the first stays, the other
is not stored and is counted and named apart from the duplicates, so the sender can see it. An
event to be stored whose number has no contact yet makes one (source ``event``): behaviour data
defines customers too.

Aggregates, set-based per batch (one upsert per table, whatever the batch size):

* ``contact_activity``: first and last order time, order count, revenue in fen (分), last
  browse, favourite, add-to-cart and signed-for time, registration time, last interaction (any
  event). Enough for RFM (recency = last order, frequency = count, monetary = revenue) and the
  lifecycle stages (active, dormant, potential, lost, new) without reading events again.
* ``contact_interests``: per contact and interest tag (a category, a product line), how many
  events, their summed weight (browse 1, favourite 3, add-to-cart 5, order 8: what the person
  did says how interested they are) and the first and last time, so recency can discount it.

Money is integer fen everywhere; an amount given in yuan (``"199.90"``) must be exact to the fen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.contacts import importer
from hongyan.contacts.numbers import NumberProblem, normalise
from hongyan.contacts.suppression import erasures, phone_context
from hongyan.db.bulk import insert_rows
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_activity, contact_events, contact_interests, contacts
from hongyan.errors import ValidationFailed
from hongyan.security.keyring import KeyRing

KINDS = ("order", "browse", "favourite", "add_to_cart", "registration", "order_signed")
INTEREST_WEIGHT = {"browse": 1.0, "favourite": 3.0, "add_to_cart": 5.0, "order": 8.0}
LAST_AT = {
    "browse": "last_browse_at",
    "favourite": "last_favourite_at",
    "add_to_cart": "last_cart_at",
    "order_signed": "last_signed_at",
}
MAX_BATCH = 1000  # per API request
MAX_AMOUNT_FEN = 10**12
#: How far after now an event may be (a sender's clock or time zone slightly off); later, it is
#: refused: it would stand as the latest order or interaction for good, since those never move
#: back.
MAX_AHEAD = timedelta(days=1)
MAX_CONFLICT_IDS = 50  # listed in a result (all are counted)


class EventInvalid(ValidationFailed):
    code = "event_invalid"


@dataclass(frozen=True)
class Event:
    event_id: str
    kind: str
    phone: str  # E.164
    occurred_at: datetime
    order_id: str | None = None
    amount_fen: int | None = None
    coupon_code: str | None = None
    tags: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)


_MAX_YUAN = Decimal(MAX_AMOUNT_FEN).scaleb(-2)
_FEN = Decimal("0.01")


def parse_amount_fen(value: Any) -> int:
    """Fen from yuan text (``"199.90"``, ``"¥1,299"``): exact to the fen, 0 to
    :data:`MAX_AMOUNT_FEN`; anything else (``NaN``, ``1e999999999``, ``0.001``) is a
    :class:`ValueError`, never a :mod:`decimal` signal.

    Only comparisons, which are exact, and a quantize of a number already known to be in range
    touch the value: arithmetic on it (``yuan * 100``) rounds to the context's 28 digits,
    overflows, underflows to 0 or signals on a NaN."""
    try:
        text = str(value).strip().replace(",", "").replace("¥", "").replace("￥", "")
        yuan = Decimal(text)
        if not yuan.is_finite() or not 0 <= yuan <= _MAX_YUAN:
            raise ValueError(value)
        fen = yuan.quantize(_FEN)  # at most 13 digits: within any precision
        if fen != yuan:
            raise ValueError(value)
        return int(fen.scaleb(2))
    except ArithmeticError:  # decimal's signals (InvalidOperation, Overflow, …)
        raise ValueError(value) from None


def parse_time(value: Any, tz: tzinfo) -> datetime:
    """ISO 8601; a time without an offset is in the tenant's time zone."""
    if isinstance(value, datetime):
        at = value
    else:
        text = str(value).strip().replace("/", "-")
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz)
    return at.astimezone(UTC)


def parse_event(raw: Mapping[str, Any], tz: tzinfo, *, now: datetime) -> Event:
    """An event from a JSON object or a CSV row; :class:`ValueError` with the field at fault.
    ``now``: the caller's clock; an event more than :data:`MAX_AHEAD` after it is refused
    (``occurred_at``)."""

    def text(name: str, limit: int = 64) -> str | None:
        value = raw.get(name)
        if value is None or str(value).strip() == "":
            return None
        s = str(value).strip()
        if len(s) > limit:
            raise ValueError(name)
        return s

    event_id = text("event_id")
    if not event_id:
        raise ValueError("event_id")
    kind = text("kind") or text("type")
    if kind not in KINDS:
        raise ValueError("kind")
    try:
        phone = normalise(str(raw.get("phone") or ""))
    except NumberProblem:
        raise ValueError("phone") from None
    when = raw.get("occurred_at") or raw.get("time")
    if not when:
        raise ValueError("occurred_at")
    try:
        occurred = parse_time(when, tz)
    except (TypeError, ValueError, OverflowError):  # OverflowError: past year 1 or 9999 in UTC
        raise ValueError("occurred_at") from None
    if occurred > now + MAX_AHEAD:
        raise ValueError("occurred_at")
    amount: int | None = None
    if raw.get("amount_fen") not in (None, ""):
        given = raw["amount_fen"]
        value = str(given).strip()
        # isdecimal, not isdigit: int() refuses "²", which isdigit takes; and no int() of
        # thousands of digits (past 4,300 its own ValueError named no field)
        if isinstance(given, bool) or not value.isdecimal() or len(value.lstrip("0")) > 13:
            raise ValueError("amount_fen")
        amount = int(value.lstrip("0") or "0")  # (leading zeros count against int()'s limit)
        if amount > MAX_AMOUNT_FEN:
            raise ValueError("amount_fen")
    elif raw.get("amount") not in (None, ""):
        try:
            amount = parse_amount_fen(raw["amount"])
        except ValueError:
            raise ValueError("amount") from None
    if kind == "order" and amount is None:
        raise ValueError("amount")
    tags_raw = raw.get("tags") or ()
    if isinstance(tags_raw, str):
        tags = tuple(t for t in tags_raw.replace("，", ",").replace("|", ",").split(",") if t)
    elif isinstance(tags_raw, list | tuple):
        tags = tuple(str(t) for t in tags_raw)
    else:
        raise ValueError("tags")
    tags = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if any(len(t) > 64 for t in tags) or len(tags) > 20:
        raise ValueError("tags")
    props = raw.get("properties") or {}
    if not isinstance(props, dict):
        raise ValueError("properties")
    return Event(
        event_id=event_id,
        kind=kind,
        phone=phone,
        occurred_at=occurred,
        order_id=text("order_id"),
        amount_fen=amount,
        coupon_code=text("coupon_code"),
        tags=tags,
        properties=props,
    )


@dataclass
class IngestResult:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0  # an id stored before, or earlier in the batch, with the same content
    conflicts: int = 0  # an id stored before, or earlier in the batch, with other content
    erased: int = 0  # of a number erased at the person's request, from before the erasure
    contacts_created: int = 0
    enrolled: int = 0  # journey enrolments the new events started
    conflict_ids: list[str] = field(default_factory=list)  # at most MAX_CONFLICT_IDS, distinct

    def conflict(self, event_id: str) -> None:
        self.conflicts += 1
        self._name(event_id)

    def _name(self, event_id: str) -> None:
        if len(self.conflict_ids) < MAX_CONFLICT_IDS and event_id not in self.conflict_ids:
            self.conflict_ids.append(event_id)

    def add(self, other: IngestResult) -> None:
        """Count ``other`` (a later batch of the same import) in."""
        for name in ("received", "accepted", "duplicates", "conflicts", "erased",
                     "contacts_created", "enrolled"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for event_id in other.conflict_ids:
            self._name(event_id)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "conflict_ids": list(self.conflict_ids)}


def same_content(a: Event, b: Event) -> bool:
    """Whether two events of one id say the same: kind, number, instant, order, amount, coupon,
    tags (as a set) and properties."""
    return (
        a.kind == b.kind
        and a.phone == b.phone
        and a.occurred_at == b.occurred_at
        and a.order_id == b.order_id
        and a.amount_fen == b.amount_fen
        and a.coupon_code == b.coupon_code
        and set(a.tags) == set(b.tags)
        and a.properties == b.properties
    )


def _same_as_stored(e: Event, contact_id: int | None, row: Any) -> bool:
    """Whether ``e`` (whose number is the contact ``contact_id``, None if it has none) says what
    the stored event ``row`` says (:func:`same_content`)."""
    return (
        e.kind == row.kind
        and contact_id == row.contact_id
        and e.occurred_at == row.occurred_at
        and e.order_id == row.order_id
        and e.amount_fen == row.amount_fen
        and e.coupon_code == row.coupon_code
        and set(e.tags) == set(row.tags or ())
        and e.properties == (row.properties or {})
    )


def _earliest(col: sa.Column[Any], new: Any) -> Any:
    return sa.case((sa.or_(col.is_(None), sa.and_(new.is_not(None), new < col)), new), else_=col)


def _latest(col: sa.Column[Any], new: Any) -> Any:
    return sa.case((sa.or_(col.is_(None), sa.and_(new.is_not(None), new > col)), new), else_=col)


class _Numbers:
    """The contacts of a batch's numbers: those that exist, looked up at once (one query), and
    those made for the events to be stored (:meth:`make`)."""

    def __init__(
        self, conn: Connection, keyring: KeyRing, clock: Clock, tenant_id: int, phones: set[str]
    ) -> None:
        ctx = phone_context(tenant_id)
        self.index = {p: keyring.blind_index(p, ctx) for p in phones}
        self.writer = importer._Writer(
            conn,
            keyring,
            tenant_id,
            clock.now(),
            importer.ImportOptions(source="event"),
            importer.segment_table(),
            blocked=set(),  # an event makes a contact whether suppressed or not: no list to read
        )
        found = self.writer.ids(list(self.index.values()))
        #: contact ids by E.164 number
        self.ids = {p: found[k] for p, k in self.index.items() if k in found}

    def make(self, phones: Iterable[str]) -> int:
        """Make the contacts of these numbers that have none; returns how many were made."""
        missing = sorted({(self.index[p], p) for p in phones if p not in self.ids})
        if not missing:
            return 0
        made = _make_contacts(self.writer, missing)
        found = self.writer.ids([k for k, _ in missing])
        self.ids.update((p, found[k]) for k, p in missing if k in found)
        return made


def _contact_ids(
    conn: Connection, keyring: KeyRing, clock: Clock, tenant_id: int, phones: Iterable[str]
) -> tuple[dict[str, int], int]:
    """Contact ids by E.164 number, making the missing contacts; and how many were made."""
    numbers = _Numbers(conn, keyring, clock, tenant_id, set(phones))
    made = numbers.make(numbers.index)
    return numbers.ids, made


def _make_contacts(writer: importer._Writer, numbers: list[tuple[bytes, str]]) -> int:
    """Make contacts for these numbers (blind index, E.164; in blind-index order, the order in
    which every batch takes their unique keys, so two batches never wait on each other in a
    cycle); returns how many this call made.

    The fast path bulk-inserts them (COPY on PostgreSQL) in a savepoint. Should another
    transaction (an event request, a contacts import) have made one of them meanwhile, the
    unique index refuses the batch, once that transaction commits; they are then inserted with
    ``INSERT … ON CONFLICT DO NOTHING``, which leaves the other's contact as it is, and the
    caller reads the ids again."""
    conn = writer.conn
    rows = [writer.new_row(importer.Parsed(e164, index)) for index, e164 in numbers]
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.begin_nested():
            writer.insert(rows)
        return len(rows)
    except (sa.exc.IntegrityError, dbapi.IntegrityError):
        stmt = (
            writer.scope.dialect_insert(conn, contacts)
            .on_conflict_do_nothing(index_elements=["tenant_id", "phone_index"])
            .returning(contacts.c.id)
        )
        fixed = {
            "tenant_id": writer.tenant_id,
            "attrs": {},  # an event's contact has none (new_row gives them as JSON text)
            "source": writer.options.source,
            "created_at": writer.now,
            "updated_at": writer.now,
        }
        values = [{**dict(zip(importer.NEW_COLUMNS, row, strict=True)), **fixed} for row in rows]
        return len(conn.execute(stmt, values).all())


def ingest(
    conn: Connection, clock: Clock, keyring: KeyRing, tenant_id: int, events: Sequence[Event]
) -> IngestResult:
    """Store new events and move the aggregates by exactly them (idempotent by event id).

    Each event is held against what its id already stands for: the stored event, else the
    first of the batch with that id (stored, unless erased). The same content is a
    ``duplicate``, other content a ``conflict`` (:func:`same_content`); neither is stored nor
    makes a contact. An event of an erased number from before its erasure (:func:`erasures`)
    is ``erased``, and so is a repeat of it. Three queries find what is known (the stored
    events of the batch's ids, the contacts of its numbers, which of those numbers were
    erased), whatever the batch size. Should another request store one of the ids between that
    lookup and the insert, the event is held against what that request stored, read then (by a
    third query, only then); a contact made for its number meanwhile stays."""
    result = IngestResult(received=len(events))
    unique: dict[str, Event] = {}
    repeats: list[Event] = []  # an id's later events in the batch
    for e in events:
        if unique.setdefault(e.event_id, e) is not e:
            repeats.append(e)
    if not unique:
        return result
    scope = TenantScope(tenant_id)
    now = clock.now()
    numbers = _Numbers(conn, keyring, clock, tenant_id, {e.phone for e in unique.values()})
    ids = numbers.ids  # by number; grows as contacts are made
    stored = _stored(conn, scope, list(unique))
    new = [e for e in unique.values() if e.event_id not in stored]
    left: set[str] = set()  # ids of the erased history of a number: not stored again
    if new:
        erased = erasures(conn, tenant_id, [numbers.index[e.phone] for e in new])
        for e in new:
            at = erased.get(numbers.index[e.phone])
            if at is not None and e.occurred_at <= at:
                left.add(e.event_id)
        result.erased = len(left)
        new = [e for e in new if e.event_id not in left] if left else new
    if new:
        result.contacts_created = numbers.make(e.phone for e in new)
        rows = [
            {
                "tenant_id": tenant_id,
                "event_id": e.event_id,
                "contact_id": ids[e.phone],
                "kind": e.kind,
                "occurred_at": e.occurred_at,
                "order_id": e.order_id,
                "amount_fen": e.amount_fen,
                "coupon_code": e.coupon_code,
                "tags": list(e.tags),
                "properties": dict(e.properties),
                "received_at": now,
            }
            for e in new
        ]
        fresh = _store(conn, scope, rows)
        if len(fresh) < len(new):  # another request stored some meanwhile
            stored.update(
                _stored(conn, scope, [e.event_id for e in new if e.event_id not in fresh])
            )
            new = [e for e in new if e.event_id in fresh]
    result.accepted = len(new)

    def differs(e: Event) -> bool:
        row = stored.get(e.event_id)
        if row is None:  # stored by this batch: its first event
            return not same_content(unique[e.event_id], e)
        return not _same_as_stored(e, ids.get(e.phone), row)

    for e in (*(e for e in unique.values() if e.event_id in stored), *repeats):
        if e.event_id in left and same_content(unique[e.event_id], e):
            result.erased += 1  # a repeat of an erased event: erased as its first
        elif differs(e):
            result.conflict(e.event_id)
    result.duplicates = result.received - result.accepted - result.conflicts - result.erased
    if new:
        _aggregate(conn, scope, ids, new, now)
        # tracking (issue 8): the new orders' conversions, by coupon or last click
        from hongyan.tracking.attribution import attribute_orders, orders_from_events

        attribute_orders(conn, tenant_id, orders_from_events(new, ids), now)
        # campaigns (issue 7): the journeys these events trigger enrol (and advance) now, with
        # the scheduler's scan as the safety net
        from hongyan.campaigns.journeys import on_events

        moved = on_events(conn, clock, keyring, tenant_id, [(e.event_id, e.kind) for e in new])
        result.enrolled = moved.get("enrolled", 0)
    return result


def _stored(conn: Connection, scope: TenantScope, event_ids: list[str]) -> dict[str, Any]:
    """The stored events of these ids (what :func:`_same_as_stored` compares), by id."""
    if not event_ids:
        return {}
    ev = contact_events.c
    rows = conn.execute(
        scope.select(
            contact_events, ev.event_id, ev.contact_id, ev.kind, ev.occurred_at, ev.order_id,
            ev.amount_fen, ev.coupon_code, ev.tags, ev.properties,
        ).where(ev.event_id.in_(event_ids))
    ).all()  # fmt: skip
    return {r.event_id: r for r in rows}


_EVENT_COLUMNS = (
    "event_id", "contact_id", "kind", "occurred_at", "order_id", "amount_fen", "coupon_code",
    "tags", "properties",
)  # fmt: skip


def _store(conn: Connection, scope: TenantScope, rows: list[dict[str, Any]]) -> set[str]:
    """Insert events whose ids were not stored when looked up; returns the ids it stored.

    The fast path bulk-inserts them (COPY / executemany). Should another request store one of
    them meanwhile, the unique index refuses the batch; it is then stored with ``INSERT … ON
    CONFLICT DO NOTHING RETURNING``, which says exactly which rows were new, so no event moves
    the aggregates twice."""
    # in event id order, so two batches of the same new events wait on each other in no cycle
    new = sorted(rows, key=lambda r: r["event_id"])
    if not new:
        return set()
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.begin_nested():
            insert_rows(
                conn,
                scope,
                contact_events,
                _EVENT_COLUMNS,
                [tuple(r[c] for c in _EVENT_COLUMNS) for r in new],
                {"received_at": new[0]["received_at"]},
            )
        return {r["event_id"] for r in new}
    except dbapi.IntegrityError:
        stmt = (
            scope.dialect_insert(conn, contact_events)
            .on_conflict_do_nothing(index_elements=["tenant_id", "event_id"])
            .returning(contact_events.c.event_id)
        )
        return {r.event_id for r in conn.execute(stmt, new)}


def _aggregate(
    conn: Connection, scope: TenantScope, ids: dict[str, int], new: list[Event], now: datetime
) -> None:
    activity: dict[int, dict[str, Any]] = {}
    interests: dict[tuple[int, str], dict[str, Any]] = {}
    for e in new:
        cid = ids[e.phone]
        a = activity.setdefault(
            cid,
            {
                "contact_id": cid,
                "first_order_at": None,
                "last_order_at": None,
                "orders_count": 0,
                "revenue_fen": 0,
                "last_browse_at": None,
                "last_favourite_at": None,
                "last_cart_at": None,
                "last_signed_at": None,
                "registered_at": None,
                "last_interaction_at": None,
                "updated_at": now,
            },
        )
        at = e.occurred_at

        def later(name: str, a: dict[str, Any] = a, at: datetime = at) -> None:
            if a[name] is None or at > a[name]:
                a[name] = at

        def earlier(name: str, a: dict[str, Any] = a, at: datetime = at) -> None:
            if a[name] is None or at < a[name]:
                a[name] = at

        later("last_interaction_at")
        if e.kind == "order":
            earlier("first_order_at")
            later("last_order_at")
            a["orders_count"] += 1
            a["revenue_fen"] += e.amount_fen or 0
        elif e.kind == "registration":
            earlier("registered_at")
        else:
            later(LAST_AT[e.kind])
        weight = INTEREST_WEIGHT.get(e.kind)
        if weight:
            for tag in e.tags:
                i = interests.setdefault(
                    (cid, tag),
                    {"contact_id": cid, "tag": tag, "events": 0, "weight": 0.0,
                     "first_at": at, "last_at": at},
                )  # fmt: skip
                i["events"] += 1
                i["weight"] += weight
                i["first_at"] = min(i["first_at"], at)
                i["last_at"] = max(i["last_at"], at)
    c = contact_activity.c
    ins = scope.dialect_insert(conn, contact_activity)
    x = ins.excluded
    set_: dict[str, Any] = {
        "first_order_at": _earliest(c.first_order_at, x.first_order_at),
        "registered_at": _earliest(c.registered_at, x.registered_at),
        "orders_count": c.orders_count + x.orders_count,
        "revenue_fen": c.revenue_fen + x.revenue_fen,
        "updated_at": x.updated_at,
    }
    for name in (
        "last_order_at",
        "last_browse_at",
        "last_favourite_at",
        "last_cart_at",
        "last_signed_at",
        "last_interaction_at",
    ):
        set_[name] = _latest(c[name], x[name])
    conn.execute(
        ins.on_conflict_do_update(index_elements=["contact_id"], set_=set_),
        # in contact id order (and interests in contact id and tag order): two batches with
        # the same contacts in other orders lock their rows in the same order, so neither can
        # hold one the other waits for while waiting for one the other holds (a deadlock)
        [{**activity[cid], "tenant_id": scope.tenant_id} for cid in sorted(activity)],
    )
    if interests:
        ci = contact_interests.c
        ins2 = scope.dialect_insert(conn, contact_interests)
        y = ins2.excluded
        conn.execute(
            ins2.on_conflict_do_update(
                index_elements=["contact_id", "tag"],
                set_={
                    "events": ci.events + y.events,
                    "weight": ci.weight + y.weight,
                    "first_at": _earliest(ci.first_at, y.first_at),
                    "last_at": _latest(ci.last_at, y.last_at),
                },
            ),
            [{**interests[key], "tenant_id": scope.tenant_id} for key in sorted(interests)],
        )


def parse_batch(raw: Sequence[Mapping[str, Any]], tz: tzinfo, *, now: datetime) -> list[Event]:
    """Every event of an API batch, or one error naming each bad event (nothing is stored);
    ``now`` as for :func:`parse_event`. An id given twice in the batch with other content
    (:func:`same_content`) is the later one's ``event_id`` error; twice the same, a duplicate."""
    if len(raw) > MAX_BATCH:
        raise EventInvalid(
            f"At most {MAX_BATCH} events per request", f"每次请求最多 {MAX_BATCH} 个事件"
        )
    out: list[Event] = []
    problems: list[dict[str, Any]] = []
    first: dict[str, Event] = {}
    for i, item in enumerate(raw):
        try:
            e = parse_event(item, tz, now=now)
        except ValueError as exc:
            problems.append({"index": i, "field": str(exc.args[0]) if exc.args else "?"})
            continue
        if not same_content(first.setdefault(e.event_id, e), e):
            problems.append({"index": i, "field": "event_id"})
        out.append(e)
    if problems:
        raise EventInvalid(
            f"{len(problems)} event(s) are not valid; nothing was stored",
            f"{len(problems)} 个事件无效，本批未保存",
            details={"problems": problems[:50]},
        )
    return out


def import_file(
    runtime: Any,
    tenant_id: int,
    stream: Any,
    filename: str,
    *,
    actor: str = "cli",
    progress: Any = None,
    batch_size: int = 5000,
) -> dict[str, Any]:
    """Import an events CSV / XLSX (columns event_id, kind, phone, occurred_at, order_id, amount
    or amount_fen, coupon_code, tags). Each batch is its own transaction: events are idempotent,
    so an import stopped half-way is resumed by running it again. Rows are checked against
    ``runtime``'s clock (read again for each batch): an event too far ahead is invalid."""
    from zoneinfo import ZoneInfo

    from hongyan.contacts.sources import check_whole, open_table
    from hongyan.tenants import service as tenants

    size = stream.seek(0, 2)
    stream.seek(0)
    with runtime.engine.begin() as conn:
        tz = ZoneInfo(tenants.get_tenant_by_id(conn, tenant_id).timezone)
        job = importer.create_job(
            conn, runtime.clock, tenant_id, kind="events", filename=filename, options={},
            actor=actor,
        )  # fmt: skip
    out: dict[str, Any] = {"import_id": job, "rows": 0, "invalid": 0, "errors": []}
    total = IngestResult()
    try:
        table = open_table(stream, size)
        header = [h.strip().lower() for h in table.header]
        if "event_id" not in header or "phone" not in header:
            raise EventInvalid(
                "An events file needs the columns event_id, kind, phone, occurred_at",
                "事件文件需要 event_id、kind、phone、occurred_at 列",
            )
        # The whole file first (its encoding, a 10 MB line, a broken workbook), so that a file
        # broken half-way stores nothing, as a contacts import.
        check_whole(stream, table)
        table = open_table(stream, size)
        batch: list[Event] = []
        now = runtime.clock.now()

        def flush() -> None:
            nonlocal now
            with runtime.engine.begin() as conn:
                got = ingest(conn, runtime.clock, runtime.keyring, tenant_id, batch)
            total.add(got)
            batch.clear()
            now = runtime.clock.now()
            if progress:
                progress(out["rows"], table.fraction())

        for line, cells in table.rows:
            out["rows"] += 1
            try:
                batch.append(parse_event(dict(zip(header, cells, strict=False)), tz, now=now))
            except ValueError as exc:
                out["invalid"] += 1
                if len(out["errors"]) < importer.SAMPLE_ERRORS:
                    out["errors"].append({"line": line, "field": str(exc.args[0])})
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    except ValidationFailed as exc:
        importer._set_job(
            runtime.engine, tenant_id, job, state="failed", error=exc.body(),
            finished_at=runtime.clock.now(),
        )  # fmt: skip
        raise
    except BaseException:
        stored = total.accepted
        failure = ValidationFailed(
            f"The import stopped on an internal error after storing {stored} events; events "
            "are idempotent, so importing the same file again goes on where it stopped",
            f"导入因内部错误中止，已保存 {stored} 条事件；事件按 ID 幂等，重新导入同一文件即可继续",
        ).body()
        failure["code"] = "import_failed"
        out.update(total.as_json())
        importer._set_job(
            runtime.engine, tenant_id, job, state="failed", error=failure, result=out,
            finished_at=runtime.clock.now(),
        )  # fmt: skip
        raise
    out.update(total.as_json())
    importer._set_job(
        runtime.engine, tenant_id, job, state="done", result=out, finished_at=runtime.clock.now()
    )
    return out

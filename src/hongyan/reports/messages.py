"""Send records, a message's timeline, the replies inbox and the suppression list: read queries.

Everything here reads; nothing writes. Each query is one set-based statement built through
:class:`~hongyan.db.scope.TenantScope`, so a tenant sees only its own rows, and none of them
returns a ciphertext or a blind index: numbers leave this module masked (``138****5678``).

Filters are parsed from text (a console form, API query parameters) by the pure functions below,
which collect every problem into one :class:`BadFilter` with a message in Chinese and English.

A number filter takes one of three shapes:

* 1 to 4 digits: the number ends with them. ``dest_masked`` keeps the last four digits of a
  mobile number in clear, so this is a suffix match on the masked column. Numbers of 7 to 10
  digits keep only their last two digits in the mask, so a 3- or 4-digit suffix cannot find them.
* a full number (E.164 ``+8613812345678``, or an 11-digit Chinese mobile ``13812345678``): an
  exact match through the blind index under the tenant's phone context.
* a masked number as the console shows it (``138****5678``): equality on the masked column.

Times are stored in UTC; filter dates are read in the tenant's time zone. ``since`` is inclusive;
``until`` is exclusive, except that a bare date (``2026-11-11``) means up to the end of that day.
Lists are newest first, ordered by (time, id), and page by offset or by an opaque keyset cursor.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.scope import TenantScope
from hongyan.db.tables import inbound_messages, message_parts, messages, suppressions
from hongyan.dispatch.states import FINAL, Reason, State
from hongyan.errors import NotFound, ValidationFailed
from hongyan.security.keyring import KeyRing

STATES: tuple[str, ...] = tuple(s.value for s in State)
CATEGORIES = ("verification", "notification", "marketing")
SOURCES = ("api", "campaign", "journey", "ab_test")
INBOX_KINDS = ("reply", "opt_out")
SUPPRESSION_REASONS = ("opt_out", "invalid", "complaint", "manual")
REASONS: tuple[str, ...] = tuple(r.value for r in Reason)
MAX_LIMIT = 200
MAX_ID = 2**63 - 1

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_MASKED = re.compile(r"^\+?[0-9]{0,4}\*{4}[0-9]{2,4}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_WORD = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_SEPARATORS = re.compile(r"[\s\-()]")


def phone_context(tenant_id: int) -> str:
    """The blind-index context of a tenant's phone numbers (the outbox's and the lists')."""
    return f"tenant:{tenant_id}:phone"


# -- filter parsing (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    field: str
    zh: str
    en: str


class BadFilter(ValidationFailed):
    """One or more filter values could not be understood; ``problems`` names each field."""

    code = "bad_filter"
    message_zh = "筛选条件不正确"
    message_en = "The filter is not valid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(
            "; ".join(p.en for p in self.problems) or None,
            "；".join(p.zh for p in self.problems) or None,
            details={"problems": [{"field": p.field, "zh": p.zh, "en": p.en} for p in problems]},
        )


@dataclass(frozen=True)
class NumberQuery:
    kind: Literal["suffix", "exact", "masked"]
    value: str  # digits, an E.164 number, or a masked number


def _number_problem(name: str) -> Problem:
    return Problem(
        name,
        "号码筛选只能填写号码末尾 1–4 位数字，或完整号码（如 +8613812345678）",
        "Enter the last 1-4 digits of the number, or the whole number (e.g. +8613812345678)",
    )


def parse_number(text: str | None, name: str = "number") -> NumberQuery | None:
    """What a number box holds: None when empty; raises BadFilter when it is not a number."""
    if text is None:
        return None
    value = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    if not value:
        return None
    if value.isascii() and value.isdigit():
        if len(value) <= 4:
            return NumberQuery("suffix", value)
        if len(value) == 11 and value.startswith("1"):
            return NumberQuery("exact", "+86" + value)
        raise BadFilter([_number_problem(name)])
    if _E164.match(value):
        return NumberQuery("exact", value)
    if _MASKED.match(value):
        return NumberQuery("masked", value)
    raise BadFilter([_number_problem(name)])


def parse_instant(
    text: str | None, tz: tzinfo, *, end: bool = False, name: str = "since"
) -> datetime | None:
    """A point in time from ``2026-11-11``, ``2026-11-11T10:30`` or an ISO time with offset.

    A time without offset is read in ``tz``. A bare date is that day's local midnight, or with
    ``end`` the next day's (the end of an inclusive day). Returns UTC; None when empty.
    """
    value = unicodedata.normalize("NFKC", text or "").strip()
    if not value:
        return None
    try:
        if _DATE.match(value):
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            moment = datetime.combine(day, time(0), tzinfo=tz)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadFilter(
            [
                Problem(
                    name,
                    f"无法识别的时间「{value[:40]}」，请使用 2026-11-11 或 2026-11-11T10:30 格式",
                    f"Cannot read the time {value[:40]!r}; use 2026-11-11 or 2026-11-11T10:30",
                )
            ]
        ) from None


def _split_values(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _collect(problems: list[Problem], parse: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return parse(*args, **kwargs)
    except BadFilter as exc:
        problems.extend(exc.problems)
        return None


def _choice(
    problems: list[Problem], name: str, value: str | None, allowed: Sequence[str] | None
) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if allowed is not None and value not in allowed:
        problems.append(
            Problem(
                name,
                f"「{value[:40]}」不是有效的{_FIELD_ZH[name]}（可选：{'、'.join(allowed)}）",
                f"{value[:40]!r} is not a valid {name} (one of: {', '.join(allowed)})",
            )
        )
        return None
    if allowed is None and not _WORD.match(value):
        problems.append(
            Problem(
                name,
                f"「{value[:40]}」不是有效的{_FIELD_ZH[name]}（小写字母、数字和下划线）",
                f"{value[:40]!r} is not a valid {name} (lower-case letters, digits, underscores)",
            )
        )
        return None
    return value


_FIELD_ZH = {
    "state": "状态",
    "category": "类别",
    "source": "来源",
    "kind": "类型",
    "reason": "原因",
}


@dataclass(frozen=True)
class MessageFilter:
    states: tuple[str, ...] = ()
    category: str | None = None
    source: str | None = None
    created_from: datetime | None = None  # UTC, inclusive
    created_to: datetime | None = None  # UTC, exclusive
    number: NumberQuery | None = None


def message_filter(
    tz: tzinfo,
    *,
    states: Iterable[str] | str | None = None,
    category: str | None = None,
    source: str | None = None,
    since: str | None = None,
    until: str | None = None,
    number: str | None = None,
) -> MessageFilter:
    """Parse a send-records filter; every problem is reported at once in one BadFilter."""
    problems: list[Problem] = []
    given = _split_values(states)
    wanted = [s for i, s in enumerate(given) if s in STATES and s not in given[:i]]
    unknown = [s for s in given if s not in STATES]
    if unknown:  # one problem, however many unknown values were sent
        _choice(problems, "state", "、".join(unknown[:3])[:40], STATES)
    flt = MessageFilter(
        states=tuple(wanted),
        category=_choice(problems, "category", category, CATEGORIES),
        source=_choice(problems, "source", source, None),
        created_from=_collect(problems, parse_instant, since, tz, name="since"),
        created_to=_collect(problems, parse_instant, until, tz, end=True, name="until"),
        number=_collect(problems, parse_number, number),
    )
    if flt.created_from and flt.created_to and flt.created_from >= flt.created_to:
        problems.append(
            Problem("until", "结束时间必须晚于开始时间", "The end must be later than the start")
        )
    if problems:
        raise BadFilter(problems)
    return flt


@dataclass(frozen=True)
class InboxFilter:
    kind: str | None = None
    number: NumberQuery | None = None


def inbox_filter(*, kind: str | None = None, number: str | None = None) -> InboxFilter:
    problems: list[Problem] = []
    flt = InboxFilter(
        kind=_choice(problems, "kind", kind, INBOX_KINDS),
        number=_collect(problems, parse_number, number),
    )
    if problems:
        raise BadFilter(problems)
    return flt


@dataclass(frozen=True)
class SuppressionFilter:
    reason: str | None = None
    number: NumberQuery | None = None


def suppression_filter(
    *, reason: str | None = None, number: str | None = None
) -> SuppressionFilter:
    problems: list[Problem] = []
    flt = SuppressionFilter(
        reason=_choice(problems, "reason", reason, SUPPRESSION_REASONS),
        number=_collect(problems, parse_number, number),
    )
    if problems:
        raise BadFilter(problems)
    return flt


def parse_page(text: str | None, name: str = "page") -> int:
    """A 1-based page number from a query string; empty means 1."""
    value = (text or "").strip()
    if not value:
        return 1
    if value.isascii() and value.isdigit() and 1 <= int(value) <= 1_000_000:
        return int(value)
    raise BadFilter(
        [Problem(name, "页码须为正整数", "The page number must be a whole number from 1")]
    )


# -- keyset cursors (pure) ----------------------------------------------------------------------


def encode_cursor(at: datetime, row_id: int) -> str:
    """An opaque cursor for the row after which the next page starts (newest-first order)."""
    raw = f"{at.astimezone(UTC).isoformat()}|{row_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        at_text, id_text = raw.split("|")
        at = datetime.fromisoformat(at_text)
        row_id = int(id_text)
        valid_id = id_text.isascii() and id_text.isdigit() and 0 < row_id <= MAX_ID
        if at.tzinfo is None or not valid_id:
            raise ValueError("not a cursor")
    except (ValueError, binascii.Error, UnicodeError):
        raise BadFilter(
            [
                Problem(
                    "cursor",
                    "分页游标无效，请使用上一页返回的 next_cursor",
                    "The cursor is not valid; pass the next_cursor of the previous page",
                )
            ]
        ) from None
    return at.astimezone(UTC), row_id


# -- pages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int  # rows matching the filter (all pages)
    limit: int
    offset: int = 0
    next_cursor: str | None = None  # None on the last page

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def _number_condition(
    q: NumberQuery,
    masked: sa.Column[Any],
    index: sa.Column[Any],
    keyring: KeyRing,
    tenant_id: int,
) -> sa.ColumnElement[bool]:
    if q.kind == "suffix":
        return masked.endswith(q.value, autoescape=True)
    if q.kind == "masked":
        return masked == q.value
    return index == keyring.blind_index(q.value, phone_context(tenant_id))


def _page(
    conn: Connection,
    scope: TenantScope,
    table: sa.Table,
    columns: Sequence[sa.Column[Any]],
    where: Sequence[sa.ColumnElement[bool]],
    at: sa.Column[Any],
    *,
    limit: int,
    cursor: str | None,
    offset: int,
) -> Page:
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise BadFilter(
            [
                Problem(
                    "limit",
                    f"每页条数须在 1 到 {MAX_LIMIT} 之间",
                    f"limit must be from 1 to {MAX_LIMIT}",
                )
            ]
        )
    stmt = scope.select(table, *columns).where(*where)
    if cursor:
        after_at, after_id = decode_cursor(cursor)
        # A row-value comparison, which both SQLite and PostgreSQL answer from an index.
        stmt = stmt.where(sa.tuple_(at, table.c.id) < sa.tuple_(after_at, after_id))
    stmt = stmt.order_by(at.desc(), table.c.id.desc()).offset(offset).limit(limit + 1)
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    total = conn.execute(scope.select(table, sa.func.count()).where(*where)).scalar_one()
    last = rows[-1] if rows else None
    next_cursor = encode_cursor(last[at.name], last["id"]) if more and last else None
    return Page(rows, int(total), limit, offset, next_cursor)


def _counts(
    conn: Connection,
    scope: TenantScope,
    table: sa.Table,
    column: sa.Column[Any],
    where: Sequence[sa.ColumnElement[bool]],
    keys: Sequence[str],
) -> dict[str, int]:
    stmt = scope.select(table, column, sa.func.count()).where(*where).group_by(column)
    found = {str(k): int(n) for k, n in conn.execute(stmt).all()}
    out = {k: found.pop(k, 0) for k in keys}
    out.update(found)  # a value this module does not know yet still counts
    return out


# -- send records -------------------------------------------------------------------------------

LIST_COLUMNS = [
    messages.c[name]
    for name in (
        "id",
        "dest_masked",
        "body",
        "category",
        "lane",
        "source",
        "source_ref",
        "state",
        "encoding",
        "parts",
        "attempts",
        "reason",
        "carrier_code",
        "channel",
        "carrier",
        "due_at",
        "expires_at",
        "created_at",
        "submitted_at",
        "done_at",
    )
]
DETAIL_COLUMNS = [*LIST_COLUMNS, messages.c.lease_until, messages.c.carrier_parts]


def _message_where(
    keyring: KeyRing, tenant_id: int, flt: MessageFilter
) -> list[sa.ColumnElement[bool]]:
    m = messages.c
    where: list[sa.ColumnElement[bool]] = []
    if flt.states:
        where.append(m.state.in_(flt.states))
    if flt.category:
        where.append(m.category == flt.category)
    if flt.source:
        where.append(m.source == flt.source)
    if flt.created_from:
        where.append(m.created_at >= flt.created_from)
    if flt.created_to:
        where.append(m.created_at < flt.created_to)
    if flt.number:
        where.append(_number_condition(flt.number, m.dest_masked, m.dest_index, keyring, tenant_id))
    return where


def list_messages(
    conn: Connection,
    keyring: KeyRing,
    tenant_id: int,
    flt: MessageFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    offset: int = 0,
) -> Page:
    """A page of a tenant's messages matching ``flt``, newest first, with the total count."""
    return _page(
        conn,
        TenantScope(tenant_id),
        messages,
        LIST_COLUMNS,
        _message_where(keyring, tenant_id, flt),
        messages.c.created_at,
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


def state_counts(
    conn: Connection, keyring: KeyRing, tenant_id: int, flt: MessageFilter
) -> dict[str, int]:
    """How many messages are in each state under ``flt`` (its own state choice left out)."""
    where = _message_where(keyring, tenant_id, replace(flt, states=()))
    return _counts(conn, TenantScope(tenant_id), messages, messages.c.state, where, STATES)


# -- a message's timeline -----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One step of a message's life. ``at`` is None when the time was not recorded."""

    kind: str  # created, due, claimed, retry, submitted, receipt, final, reply
    at: datetime | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    message: dict[str, Any]
    parts: list[dict[str, Any]]
    replies: list[dict[str, Any]]
    events: list[Event]


PART_COLUMNS = [
    message_parts.c[name]
    for name in (
        "id",
        "part_no",
        "channel",
        "carrier_id",
        "stat",
        "err",
        "reason",
        "submitted_at",
        "done_at",
    )
]
INBOX_COLUMNS = [
    inbound_messages.c[name]
    for name in (
        "id",
        "channel",
        "phone_masked",
        "destination",
        "text",
        "kind",
        "message_id",
        "received_at",
    )
]


def build_events(
    message: Mapping[str, Any],
    parts: Sequence[Mapping[str, Any]],
    replies: Sequence[Mapping[str, Any]] = (),
) -> list[Event]:
    """The timeline of one message from its row, its parts and the replies to it (pure).

    Events are ordered by time; an event without a recorded time (how many times dispatchers
    claimed the message: the table keeps the count, not each claim's time) sits where it must
    have happened, after the due time and before the submit.
    """
    state = State(message["state"])
    attempts = int(message.get("attempts") or 0)
    # (sort time, rank, event): rank orders events at the same instant in their causal order.
    staged: list[tuple[datetime, int, Event]] = []
    created = message["created_at"]
    staged.append(
        (
            created,
            0,
            Event(
                "created",
                created,
                {
                    "source": message.get("source"),
                    "category": message.get("category"),
                    "parts": message.get("parts"),
                    "encoding": message.get("encoding"),
                },
            ),
        )
    )
    due = message["due_at"]
    claimed = Event(
        "claimed",
        None,
        {
            "attempts": attempts,
            "lease_until": message.get("lease_until") if state is State.SENDING else None,
        },
    )
    if state is State.PLANNED and attempts:
        # Sent back for another try: due_at is the next attempt; the last error is kept.
        staged.append((due, 1, claimed))
        detail = {
            "attempts": attempts,
            "reason": message.get("reason"),
            "carrier_code": message.get("carrier_code"),
        }
        staged.append((due, 2, Event("retry", due, detail)))
    else:
        staged.append((due, 2, Event("due", due, {"expires_at": message.get("expires_at")})))
        if attempts:
            staged.append((due, 3, claimed))
    for p in parts:
        staged.append(
            (
                p["submitted_at"],
                4,
                Event(
                    "submitted",
                    p["submitted_at"],
                    {k: p[k] for k in ("part_no", "channel", "carrier_id")},
                ),
            )
        )
        if p.get("stat") is not None:
            at = p.get("done_at")
            staged.append(
                (
                    at or p["submitted_at"],
                    5,
                    Event(
                        "receipt",
                        at,
                        {
                            "part_no": p["part_no"],
                            "carrier_id": p["carrier_id"],
                            "stat": p["stat"],
                            "err": p.get("err"),
                            "reason": p.get("reason"),
                        },
                    ),
                )
            )
    if state in FINAL:
        done = message.get("done_at")
        last = max((s[0] for s in staged), default=created)
        staged.append(
            (
                done or last,
                6,
                Event(
                    "final",
                    done,
                    {
                        "state": state.value,
                        "reason": message.get("reason"),
                        "carrier_code": message.get("carrier_code"),
                    },
                ),
            )
        )
    for r in replies:
        staged.append(
            (
                r["received_at"],
                7,
                Event(
                    "reply",
                    r["received_at"],
                    {"kind": r["kind"], "text": r["text"], "inbound_id": r["id"]},
                ),
            )
        )
    staged.sort(key=lambda s: (s[0], s[1]))
    return [e for _, _, e in staged]


def message_timeline(conn: Connection, tenant_id: int, message_id: int) -> Timeline:
    """One message of this tenant with its parts, replies and timeline; NotFound otherwise."""
    if not 0 < message_id <= MAX_ID:
        raise NotFound("No such message", "找不到该短信")
    scope = TenantScope(tenant_id)
    row = (
        conn.execute(scope.select(messages, *DETAIL_COLUMNS).where(messages.c.id == message_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("No such message", "找不到该短信")
    parts = [
        dict(p)
        for p in conn.execute(
            scope.select(message_parts, *PART_COLUMNS)
            .where(message_parts.c.message_id == message_id)
            .order_by(message_parts.c.submitted_at, message_parts.c.part_no, message_parts.c.id)
        ).mappings()
    ]
    replies = [
        dict(r)
        for r in conn.execute(
            scope.select(inbound_messages, *INBOX_COLUMNS)
            .where(inbound_messages.c.message_id == message_id)
            .order_by(inbound_messages.c.received_at, inbound_messages.c.id)
        ).mappings()
    ]
    message = dict(row)
    return Timeline(message, parts, replies, build_events(message, parts, replies))


# -- replies and the suppression list -----------------------------------------------------------


def _inbox_where(
    keyring: KeyRing, tenant_id: int, flt: InboxFilter
) -> list[sa.ColumnElement[bool]]:
    c = inbound_messages.c
    where: list[sa.ColumnElement[bool]] = []
    if flt.kind:
        where.append(c.kind == flt.kind)
    if flt.number:
        where.append(
            _number_condition(flt.number, c.phone_masked, c.phone_index, keyring, tenant_id)
        )
    return where


def list_inbox(
    conn: Connection,
    keyring: KeyRing,
    tenant_id: int,
    flt: InboxFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    offset: int = 0,
) -> Page:
    """Replies and opt-outs received by the tenant, newest first."""
    return _page(
        conn,
        TenantScope(tenant_id),
        inbound_messages,
        INBOX_COLUMNS,
        _inbox_where(keyring, tenant_id, flt),
        inbound_messages.c.received_at,
        limit=limit,
        cursor=cursor,
        offset=offset,
    )


def inbox_counts(
    conn: Connection, keyring: KeyRing, tenant_id: int, flt: InboxFilter
) -> dict[str, int]:
    """Replies per kind under ``flt`` (its own kind choice left out)."""
    where = _inbox_where(keyring, tenant_id, replace(flt, kind=None))
    scope = TenantScope(tenant_id)
    return _counts(conn, scope, inbound_messages, inbound_messages.c.kind, where, INBOX_KINDS)


SUPPRESSION_COLUMNS = [
    suppressions.c[name]
    for name in (
        "id",
        "phone_masked",
        "reason",
        "scope",
        "source",
        "detail",
        "created_at",
        "expires_at",
    )
]


def list_suppressions(
    conn: Connection,
    keyring: KeyRing,
    tenant_id: int,
    flt: SuppressionFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    offset: int = 0,
) -> Page:
    """The tenant's suppression list (masked number, reason, scope, source, time), newest first."""
    c = suppressions.c
    where: list[sa.ColumnElement[bool]] = []
    if flt.reason:
        where.append(c.reason == flt.reason)
    if flt.number:
        where.append(
            _number_condition(flt.number, c.phone_masked, c.phone_index, keyring, tenant_id)
        )
    return _page(
        conn,
        TenantScope(tenant_id),
        suppressions,
        SUPPRESSION_COLUMNS,
        where,
        c.created_at,
        limit=limit,
        cursor=cursor,
        offset=offset,
    )

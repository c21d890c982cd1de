"""A campaign's report: the funnel, delivery and failure reasons, breakdowns, clicks over time,
cost and ROI. Read-only; every figure comes from a handful of set-based GROUP BY statements
(the messages once by variant × state × channel × reason × the recipient's place and carrier;
the clicks once by variant and place; conversions by variant and by the buyer's place; clicks
by hour), assembled here.

The same statements serve any set of messages (a :class:`Subject`): a journey's (its send steps
are its variants, see :mod:`hongyan.reports.journeys`) and a segment's campaigns (grouped by
campaign instead of variant, see :mod:`hongyan.reports.segments`).

The place of a message is the message's own: ``number_province``, ``number_city`` and
``carrier`` are copied onto it when it is planned, and onto a link when it is issued and from
the link onto each click (migration 0015), so the two large statements read ``messages`` and
``clicks`` alone (joins to contacts cost 3.3 s for 1,000,000 messages on PostgreSQL).

Definitions (per campaign, per variant, per province / city / carrier):

* planned: messages the campaign put in the outbox; sent: submitted to a carrier
  (``submitted_at`` set); delivered, failed (refused, or ``undelivered`` by the carrier),
  expired, cancelled: final states; pending: the rest. Failure reasons cover failed and
  expired messages.
* delivery rate: delivered / sent.
* clicked: people's clicks only (bots, previews, scanners and HEAD requests are counted apart as
  ``bot_clicks``); total = every click, unique = distinct links (one per recipient).
* converted, revenue: conversions (coupon or last click, see
  :mod:`hongyan.tracking.attribution`) and their order amounts.
* cost: each sent message's parts × its channel's ``price_per_part`` (``channels`` table, yuan);
  ROI = (revenue − cost) / cost.
* clicks by hour after sending: from the campaign's first submission; by hour of day: in the
  tenant's time zone.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.scope import TENANT_OPTION, TenantScope
from hongyan.db.tables import channels, clicks, contacts, conversions, links
from hongyan.db.tables import messages as m
from hongyan.errors import NotFound

UNKNOWN = "未知"
#: A failure with a reason: refused (failed) or not delivered by the carrier (undelivered).
FAILED_STATES = ("failed", "undelivered")


class CampaignNotFound(NotFound):
    code = "campaign_not_found"
    message_zh = "找不到该活动的发送记录"
    message_en = "No messages or links for this campaign"


def _contact_of(col: Any, tenant_id: int) -> Any:
    """The join condition to a row's contact, kept to the tenant (in ON: an outer join)."""
    return sa.and_(contacts.c.id == col, contacts.c.tenant_id == tenant_id)


def _blank() -> dict[str, Any]:
    return {
        "planned": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "expired": 0,
        "cancelled": 0,
        "pending": 0,
        "parts": 0,
        "cost_fen": 0,
        "clicks_total": 0,
        "clicks_unique": 0,
        "bot_clicks": 0,
        "conversions": 0,
        "revenue_fen": 0,
    }


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """Add the rates (pure)."""
    sent, delivered, cost = row["sent"], row["delivered"], row["cost_fen"]
    row["delivery_rate"] = round(delivered / sent, 4) if sent else None
    row["click_rate"] = round(row["clicks_unique"] / delivered, 4) if delivered else None
    row["conversion_rate"] = round(row["conversions"] / delivered, 4) if delivered else None
    row["roi"] = round((row["revenue_fen"] - cost) / cost, 4) if cost else None
    return row


def blank_row() -> dict[str, Any]:
    """A group with nothing in it, rates included."""
    return _finish(_blank())


def _add_state(row: dict[str, Any], state: str, submitted: bool, n: int) -> None:
    row["planned"] += n
    if submitted:
        row["sent"] += n
    if state in FAILED_STATES:
        row["failed"] += n
    elif state in ("delivered", "expired", "cancelled"):
        row[state] += n
    else:
        row["pending"] += n


def _hour_bucket(conn: Connection, col: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.func.date_trunc("hour", col)
    return sa.func.strftime("%Y-%m-%d %H:00:00", col)


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _place_columns(province: Any, city: Any, carrier: Any) -> list[Any]:
    """Grouped as stored (NULL for unknown, named by :func:`assemble`): a ``coalesce`` per
    column per row cost 15 % of the million-message statement."""
    return [province.label("province"), city.label("city"), carrier.label("carrier")]


def _known(value: str | None) -> str:
    return UNKNOWN if value is None else value


@dataclass(frozen=True)
class Subject:
    """What a report counts: which messages, clicks and conversions (conditions on each table;
    None: the subject has none of that kind), and the column of each that splits them into
    groups (``variant``: a campaign's variants or a journey's steps; ``campaign_id``: a
    segment's campaigns). The tenant is added to every statement."""

    messages: Any
    clicks: Any | None
    conversions: Any | None
    group: str = "variant"


def campaign_subject(campaign_id: int) -> Subject:
    return Subject(
        m.c.campaign_id == campaign_id,
        clicks.c.campaign_id == campaign_id,
        conversions.c.campaign_id == campaign_id,
    )


def campaign_report(
    conn: Connection,
    tenant_id: int,
    campaign_id: int,
    *,
    timezone: str = "Asia/Shanghai",
    places: bool = True,
) -> dict[str, Any]:
    """The report (see the module docstring) of a campaign that has messages or links."""
    run = functools.partial(
        report,
        conn,
        tenant_id,
        campaign_subject(campaign_id),
        {"campaign_id": campaign_id},
        timezone=timezone,
        places=places,
    )
    rep = run()
    if rep is None:
        has_links = conn.execute(
            TenantScope(tenant_id)
            .select(links, links.c.id)
            .where(links.c.campaign_id == campaign_id)
            .limit(1)
        ).first()
        if has_links is None:
            raise CampaignNotFound(details={"campaign_id": campaign_id})
        rep = run(empty=True)
        assert rep is not None
    return rep


def report(
    conn: Connection,
    tenant_id: int,
    subject: Subject,
    head: dict[str, Any],
    *,
    timezone: str = "Asia/Shanghai",
    places: bool = True,
    empty: bool = False,
) -> dict[str, Any] | None:
    """The report of ``subject``, ``head`` first; None when it has no message (unless
    ``empty``). One pass over the messages (by group, state, channel, reason and place), one
    over the clicks (by group, bot or not, and place), one for clicks by hour, one over the
    conversions and one placing them by their contact; everything else is assembled from those.

    ``places=False``: without provinces and cities (and without placing clicks and
    conversions); carriers stay (the message's own carrier). With the places on the rows it
    saves little; kept for the API's ``?places=false`` and the CLI's ``--no-places``."""
    scoped = {TENANT_OPTION: tenant_id}
    if conn.dialect.name == "postgresql":
        # Hash the groups in memory rather than sort them on disk (this transaction only).
        conn.execute(sa.select(sa.func.set_config("work_mem", "128MB", True)))
    prices = {
        r.name: Decimal(r.price_per_part)
        for r in conn.execute(sa.select(channels.c.name, channels.c.price_per_part))
    }
    submitted = m.c.submitted_at.is_not(None)
    if places:
        place = _place_columns(m.c.number_province, m.c.number_city, m.c.carrier)
    else:
        place = [
            sa.null().label("province"),
            sa.null().label("city"),
            m.c.carrier.label("carrier"),
        ]
    key = m.c[subject.group]
    grouped = [key, m.c.state, m.c.channel, m.c.reason, submitted]
    grouped += place if places else place[2:]
    message_groups = conn.execute(
        sa.select(
            key.label("variant"),
            m.c.state,
            m.c.channel,
            m.c.reason,
            submitted.label("submitted"),
            *place,
            sa.func.count().label("n"),
            sa.func.sum(m.c.parts).label("parts"),
            sa.func.min(m.c.submitted_at).label("first"),
        )
        .where(m.c.tenant_id == tenant_id, subject.messages)
        .group_by(*grouped)
        .execution_options(**scoped)
    ).all()
    if not message_groups and not empty:
        return None
    scope = TenantScope(tenant_id)
    click_groups: list[Any] = []
    conversion_groups: list[Any] = []
    place_clicks: list[Any] = []
    place_conversions: list[Any] = []
    hourly: list[tuple[datetime, int]] = []
    if subject.clicks is not None:
        # By group, bot or person, and place at once: a link has one place (the click's is the
        # link's), so the distinct links of each place add up to those of the group.
        is_bot = clicks.c.bot.is_not(None)
        ckey = clicks.c[subject.group]
        cplace = (
            _place_columns(clicks.c.number_province, clicks.c.number_city, clicks.c.carrier)
            if places
            else []
        )
        click_groups = list(
            conn.execute(
                scope.select(
                    clicks,
                    ckey.label("variant"),
                    is_bot.label("bot"),
                    *cplace,
                    sa.func.count().label("n"),
                    sa.func.count(sa.distinct(clicks.c.link_id)).label("u"),
                )
                .where(subject.clicks)
                .group_by(ckey, is_bot, *cplace)
            ).all()
        )
        place_clicks = [r for r in click_groups if not r.bot] if places else []
        bucket = _hour_bucket(conn, clicks.c.at)
        hourly = [
            (_as_utc(r.h), r.n)
            for r in conn.execute(
                scope.select(clicks, bucket.label("h"), sa.func.count().label("n"))
                .where(subject.clicks, clicks.c.bot.is_(None))
                .group_by(bucket)
            )
        ]
    if subject.conversions is not None:
        vkey = conversions.c[subject.group]
        conversion_groups = list(
            conn.execute(
                scope.select(
                    conversions,
                    vkey.label("variant"),
                    conversions.c.method,
                    sa.func.count().label("n"),
                    sa.func.sum(conversions.c.amount_fen).label("amount"),
                )
                .where(subject.conversions)
                .group_by(vkey, conversions.c.method)
            ).all()
        )
        if places:
            place_conversions = _placed_conversions(conn, tenant_id, subject.conversions)
    rep = assemble(
        head,
        message_groups,
        click_groups,
        conversion_groups,
        place_clicks,
        place_conversions,
        hourly,
        prices,
        timezone,
    )
    if not places:
        rep["provinces"] = rep["cities"] = []
    rep["places"] = places
    return rep


def _placed_source(conn: Connection, rows: Any, contact_id: Any, tenant_id: int) -> Any:
    """``rows`` joined (outer) to the place of each row's contact, and the contact's three
    place columns, unlabelled (for conversions: they are few, and carry no place of their own
    while their buyer is a contact).

    On PostgreSQL a LATERAL lookup (``LIMIT 1`` keeps it from being flattened into a join): one
    primary-key probe per row, bounded by the conversions, where a plain join may hash every
    contact of the tenant (it did for 50,000 clicks among 1,000,000 contacts: 0.9 s). SQLite
    joins by probing the key anyway."""
    if conn.dialect.name == "postgresql":
        found = (
            sa.select(contacts.c.number_province, contacts.c.number_city, contacts.c.carrier)
            .where(contacts.c.id == contact_id, contacts.c.tenant_id == tenant_id)
            .limit(1)
            .lateral("place")
        )
        source = rows.outerjoin(found, sa.true())
        cols = (found.c.number_province, found.c.number_city, found.c.carrier)
    else:
        source = rows.outerjoin(contacts, _contact_of(contact_id, tenant_id))
        cols = (contacts.c.number_province, contacts.c.number_city, contacts.c.carrier)
    return source, cols


def _placed_conversions(conn: Connection, tenant_id: int, where: Any) -> list[Any]:
    """Conversions by the buyer's province, city and carrier: the contact's, or, for a buyer
    who had their data erased (no contact any more), the place ``forget`` wrote on the
    conversion (its own columns are null while the buyer is a contact)."""
    c = conversions.c
    source, cols = _placed_source(conn, conversions, c.contact_id, tenant_id)
    own = (c.number_province, c.number_city, c.carrier)
    vplace = _place_columns(*(sa.func.coalesce(a, b) for a, b in zip(cols, own, strict=True)))
    return list(
        conn.execute(
            sa.select(
                *vplace,
                sa.func.count().label("n"),
                sa.func.sum(conversions.c.amount_fen).label("amount"),
            )
            .select_from(source)
            .where(conversions.c.tenant_id == tenant_id, where)
            .group_by(*vplace)
            .execution_options(**{TENANT_OPTION: tenant_id})
        ).all()
    )


def assemble(
    head: dict[str, Any],
    message_groups: Iterable[Any],
    click_groups: Iterable[Any],
    conversion_groups: Iterable[Any],
    place_clicks: Iterable[Any],
    place_conversions: Iterable[Any],
    hourly: list[tuple[datetime, int]],
    prices: dict[str, Decimal],
    timezone: str,
) -> dict[str, Any]:
    """The report from the grouped rows (pure): ``head``, totals, groups (``variants``),
    failures, places, hours. A group's key is the rows' ``variant`` ("-" for none)."""
    tz = ZoneInfo(timezone)
    totals = _blank()
    variants: dict[str, dict[str, Any]] = defaultdict(_blank)
    places: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {
        "province": defaultdict(_blank),
        "city": defaultdict(_blank),
        "carrier": defaultdict(_blank),
    }

    def place_rows(r: Any) -> list[dict[str, Any]]:
        province, city, carrier = _known(r.province), _known(r.city), _known(r.carrier)
        return [
            places["province"][(province,)],
            places["city"][(province, city)],
            places["carrier"][(carrier,)],
        ]

    def rows_for(r: Any) -> list[dict[str, Any]]:
        return [totals, variants[r.variant or "-"], *place_rows(r)]

    failures: dict[str, int] = defaultdict(int)
    by_variant: dict[tuple[str, str], int] = defaultdict(int)
    parts_by_channel: dict[tuple[str, str | None], int] = defaultdict(int)
    first_sent: datetime | None = None
    for r in message_groups:
        for row in rows_for(r):
            _add_state(row, r.state, bool(r.submitted), r.n)
        v = r.variant or "-"
        if r.state in (*FAILED_STATES, "expired"):
            reason = r.reason or "unknown"
            failures[reason] += r.n
            by_variant[(v, reason)] += r.n
        if r.submitted:
            parts_by_channel[(v, r.channel)] += int(r.parts or 0)
            if r.first is not None:
                first = _as_utc(r.first)
                first_sent = first if first_sent is None else min(first_sent, first)
    for (v, channel), parts in parts_by_channel.items():
        cost = int((parts * prices.get(channel or "", Decimal(0)) * 100).to_integral_value())
        for row in (totals, variants[v]):
            row["parts"] += parts
            row["cost_fen"] += cost
    for r in click_groups:
        for row in (totals, variants[r.variant or "-"]):
            if r.bot:
                row["bot_clicks"] += r.n
            else:
                row["clicks_total"] += r.n
                row["clicks_unique"] += r.u
    for r in place_clicks:
        for row in place_rows(r):
            row["clicks_total"] += int(r.n)
            row["clicks_unique"] += int(r.u)
    for r in place_conversions:
        for row in place_rows(r):
            row["conversions"] += int(r.n)
            row["revenue_fen"] += int(r.amount or 0)
    for r in conversion_groups:
        for row in (totals, variants[r.variant or "-"]):
            row["conversions"] += r.n
            row["revenue_fen"] += int(r.amount or 0)
            key = f"conversions_{r.method}"
            row[key] = row.get(key, 0) + r.n
    return {
        **head,
        "timezone": timezone,
        "first_sent_at": first_sent.isoformat() if first_sent else None,
        "totals": _finish(totals),
        "variants": [_finish({"variant": k, **v}) for k, v in sorted(variants.items())],
        "failures": [
            {"reason": k, "count": v} for k, v in sorted(failures.items(), key=lambda i: -i[1])
        ],
        "failures_by_variant": [
            {"variant": v, "reason": reason, "count": n}
            for (v, reason), n in sorted(by_variant.items())
        ],
        "provinces": _places(places["province"], ("province",)),
        "cities": _places(places["city"], ("province", "city")),
        "carriers": _places(places["carrier"], ("carrier",)),
        "clicks_by_hour_after_send": _after_send(hourly, first_sent),
        "clicks_by_hour_of_day": _hour_of_day(hourly, tz),
        "clicks_heatmap": _heatmap(hourly, tz),
    }


def _places(
    groups: dict[tuple[str, ...], dict[str, Any]], names: tuple[str, ...]
) -> list[dict[str, Any]]:
    rows = [_finish({**dict(zip(names, key, strict=True)), **v}) for key, v in groups.items()]
    return sorted(rows, key=lambda r: (-r["planned"], *(r[n] for n in names)))


def _after_send(
    hourly: Iterable[tuple[datetime, int]], start: datetime | None
) -> list[dict[str, int]]:
    """Clicks per whole hour since the first submission (pure)."""
    if start is None:
        return []
    origin = start.replace(minute=0, second=0, microsecond=0)
    counts: dict[int, int] = defaultdict(int)
    for at, n in hourly:
        counts[max(0, int((at - origin) / timedelta(hours=1)))] += n
    if not counts:
        return []
    return [{"hour": h, "clicks": counts.get(h, 0)} for h in range(max(counts) + 1)]


def _hour_of_day(hourly: Iterable[tuple[datetime, int]], tz: ZoneInfo) -> list[dict[str, int]]:
    counts = [0] * 24
    for at, n in hourly:
        counts[at.astimezone(tz).hour] += n
    return [{"hour": h, "clicks": counts[h]} for h in range(24)]


def _heatmap(hourly: Iterable[tuple[datetime, int]], tz: ZoneInfo) -> list[dict[str, Any]]:
    """Clicks per local date and hour of day (pure)."""
    cells: dict[tuple[str, int], int] = defaultdict(int)
    for at, n in hourly:
        local = at.astimezone(tz)
        cells[(local.date().isoformat(), local.hour)] += n
    return [{"date": d, "hour": h, "clicks": n} for (d, h), n in sorted(cells.items())]

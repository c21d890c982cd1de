"""A campaign's report: the funnel, delivery and failure reasons, breakdowns, clicks over time,
cost and ROI. Read-only; every figure comes from a handful of set-based GROUP BY statements
(the messages once by variant × state × channel, once by the recipients' place and carrier;
failures by reason; clicks and conversions by variant; clicks by hour), assembled here.

Definitions (per campaign, per variant, per province / city / carrier):

* planned: messages the campaign put in the outbox; sent: submitted to a carrier
  (``submitted_at`` set); delivered / failed / expired: final states; pending: the rest.
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

from collections import defaultdict
from collections.abc import Iterable
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
SENT_STATES = ("submitted", "delivered", "failed", "expired")


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


def _add_state(row: dict[str, Any], state: str, submitted: bool, n: int) -> None:
    row["planned"] += n
    if submitted:
        row["sent"] += n
    if state in ("delivered", "failed", "expired"):
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


def campaign_report(
    conn: Connection, tenant_id: int, campaign_id: int, *, timezone: str = "Asia/Shanghai"
) -> dict[str, Any]:
    scope = TenantScope(tenant_id)
    tz = ZoneInfo(timezone)
    mine = (m.c.campaign_id == campaign_id,)
    totals = _blank()
    variants: dict[str, dict[str, Any]] = defaultdict(_blank)
    prices = {
        r.name: Decimal(r.price_per_part)
        for r in conn.execute(sa.select(channels.c.name, channels.c.price_per_part))
    }
    submitted = m.c.submitted_at.is_not(None)
    parts_by_channel: dict[tuple[str, str | None], int] = defaultdict(int)
    first_sent: datetime | None = None
    for r in conn.execute(
        scope.select(
            m,
            m.c.variant,
            m.c.state,
            m.c.channel,
            submitted.label("submitted"),
            sa.func.count().label("n"),
            sa.func.sum(m.c.parts).label("parts"),
            sa.func.min(m.c.submitted_at).label("first"),
        )
        .where(*mine)
        .group_by(m.c.variant, m.c.state, m.c.channel, submitted)
    ):
        v = r.variant or "-"
        for row in (totals, variants[v]):
            _add_state(row, r.state, bool(r.submitted), r.n)
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

    has_links = conn.execute(
        scope.select(links, links.c.id).where(links.c.campaign_id == campaign_id).limit(1)
    ).first()
    if totals["planned"] == 0 and has_links is None:
        raise CampaignNotFound(details={"campaign_id": campaign_id})

    failures: dict[str, int] = defaultdict(int)
    failures_by_variant: list[dict[str, Any]] = []
    for r in conn.execute(
        scope.select(m, m.c.variant, m.c.reason, sa.func.count().label("n"))
        .where(*mine, m.c.state.in_(("failed", "expired")))
        .group_by(m.c.variant, m.c.reason)
    ):
        reason = r.reason or "unknown"
        failures[reason] += r.n
        failures_by_variant.append({"variant": r.variant or "-", "reason": reason, "count": r.n})

    # Clicks and conversions by variant.
    is_bot = clicks.c.bot.is_not(None)
    for r in conn.execute(
        scope.select(
            clicks,
            clicks.c.variant,
            is_bot.label("bot"),
            sa.func.count().label("n"),
            sa.func.count(sa.distinct(clicks.c.link_id)).label("u"),
        )
        .where(clicks.c.campaign_id == campaign_id)
        .group_by(clicks.c.variant, is_bot)
    ):
        for row in (totals, variants[r.variant or "-"]):
            if r.bot:
                row["bot_clicks"] += r.n
            else:
                row["clicks_total"] += r.n
                row["clicks_unique"] += r.u
    for r in conn.execute(
        scope.select(
            conversions,
            conversions.c.variant,
            conversions.c.method,
            sa.func.count().label("n"),
            sa.func.sum(conversions.c.amount_fen).label("amount"),
        )
        .where(conversions.c.campaign_id == campaign_id)
        .group_by(conversions.c.variant, conversions.c.method)
    ):
        for row in (totals, variants[r.variant or "-"]):
            row["conversions"] += r.n
            row["revenue_fen"] += int(r.amount or 0)
            row[f"conversions_{r.method}"] = row.get(f"conversions_{r.method}", 0) + r.n

    # Where the recipients are: the number's province and city (号码归属地), the carrier.
    places: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {
        "province": defaultdict(_blank),
        "city": defaultdict(_blank),
        "carrier": defaultdict(_blank),
    }
    province = sa.func.coalesce(contacts.c.number_province, UNKNOWN)
    city = sa.func.coalesce(contacts.c.number_city, UNKNOWN)
    carrier = sa.func.coalesce(m.c.carrier, UNKNOWN)
    for r in conn.execute(
        sa.select(
            province.label("province"),
            city.label("city"),
            carrier.label("carrier"),
            m.c.state,
            submitted.label("submitted"),
            sa.func.count().label("n"),
        )
        .select_from(m.outerjoin(contacts, _contact_of(m.c.contact_id, tenant_id)))
        .where(m.c.tenant_id == tenant_id, *mine)
        .group_by(province, city, carrier, m.c.state, submitted)
        .execution_options(**{TENANT_OPTION: tenant_id})
    ):
        for kind, key in (
            ("province", (r.province,)),
            ("city", (r.province, r.city)),
            ("carrier", (r.carrier,)),
        ):
            _add_state(places[kind][key], r.state, bool(r.submitted), r.n)
    for table, col, value in (
        (clicks, clicks.c.link_id, "clicks_unique"),
        (conversions, conversions.c.id, "conversions"),
    ):
        ccity = sa.func.coalesce(contacts.c.number_city, UNKNOWN)
        cprov = sa.func.coalesce(contacts.c.number_province, UNKNOWN)
        ccarrier = sa.func.coalesce(contacts.c.carrier, UNKNOWN)
        where = [table.c.campaign_id == campaign_id]
        if table is clicks:
            where.append(clicks.c.bot.is_(None))
        amount = sa.func.sum(conversions.c.amount_fen) if table is conversions else sa.literal(0)
        for r in conn.execute(
            sa.select(
                cprov.label("province"),
                ccity.label("city"),
                ccarrier.label("carrier"),
                sa.func.count(sa.distinct(col)).label("n"),
                amount.label("amount"),
            )
            .select_from(table.outerjoin(contacts, _contact_of(table.c.contact_id, tenant_id)))
            .where(table.c.tenant_id == tenant_id, *where)
            .group_by(cprov, ccity, ccarrier)
            .execution_options(**{TENANT_OPTION: tenant_id})
        ):
            for kind, key in (
                ("province", (r.province,)),
                ("city", (r.province, r.city)),
                ("carrier", (r.carrier,)),
            ):
                places[kind][key][value] += r.n
                if table is conversions:
                    places[kind][key]["revenue_fen"] += int(r.amount or 0)

    # Clicks over time (people only), by UTC hour; then hours after sending, hour of day.
    bucket = _hour_bucket(conn, clicks.c.at)
    hourly: list[tuple[datetime, int]] = [
        (_as_utc(r.h), r.n)
        for r in conn.execute(
            scope.select(clicks, bucket.label("h"), sa.func.count().label("n"))
            .where(clicks.c.campaign_id == campaign_id, clicks.c.bot.is_(None))
            .group_by(bucket)
        )
    ]
    return {
        "campaign_id": campaign_id,
        "timezone": timezone,
        "first_sent_at": first_sent.isoformat() if first_sent else None,
        "totals": _finish(totals),
        "variants": [_finish({"variant": k, **v}) for k, v in sorted(variants.items())],
        "failures": [
            {"reason": k, "count": v} for k, v in sorted(failures.items(), key=lambda i: -i[1])
        ],
        "failures_by_variant": failures_by_variant,
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

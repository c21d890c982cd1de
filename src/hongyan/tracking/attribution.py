"""Conversions: an order attributed to a campaign (or a journey) by its coupon, else by the
last click.

A journey's send step issues links and coupons like a campaign's variant, with the journey
(``journey_id``) in place of the campaign and the step (``s<position>``) as the variant; the
rules below treat both alike, and an order key is converted once, to one of them.

Rules (:func:`decide`, pure):

* An order is attributed at most once (its key: the order id, else the event id); a key already
  converted is skipped, and so is a second event with the same key in one batch.
* An order that names a coupon: a coupon that was issued, not yet redeemed and not expired at
  the order's time converts the order (method ``coupon``) to the coupon's campaign (or journey)
  and variant,
  whoever the buyer is (coupons are forwarded). Otherwise the coupon is rejected with its
  reason (``unknown``, ``used``, ``not_issued``, ``expired``), recorded, and the order falls
  back to clicks.
* Else the buyer's last click by a person (bots never count) on a campaign's or a journey's
  link within the
  window before the order (default 7 days) converts it (method ``click``).

The service step (:func:`attribute_orders`) runs inside the events ingestion's transaction,
for the batch's new orders only: three set-based reads (converted keys, coupons by code, the
buyers' clicks in the batch's time span), one compare-and-set ``UPDATE … RETURNING`` that
redeems the coupons (a coupon redeemed meanwhile by another request is ``used``), one insert
of conversions (``ON CONFLICT DO NOTHING`` on the order key) and one of rejections.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.bulk import fetch_in
from hongyan.db.scope import TenantScope
from hongyan.db.tables import clicks, conversions, coupon_rejections, coupons
from hongyan.tracking import codes, links


@dataclass(frozen=True)
class Order:
    key: str
    event_id: str
    contact_id: int
    at: datetime
    amount_fen: int
    coupon: str | None = None


@dataclass(frozen=True)
class CouponState:
    id: int
    state: str
    campaign_id: int | None
    variant: str | None
    expires_at: datetime | None
    journey_id: int | None = None


@dataclass(frozen=True)
class ClickRef:
    id: int
    contact_id: int
    at: datetime
    campaign_id: int | None
    variant: str | None
    journey_id: int | None = None


@dataclass(frozen=True)
class Conversion:
    order: Order
    method: str  # coupon, click
    campaign_id: int | None
    variant: str | None
    coupon_id: int | None = None
    click_id: int | None = None
    journey_id: int | None = None


@dataclass(frozen=True)
class Rejection:
    order: Order
    code: str
    reason: str  # unknown, used, not_issued, expired


@dataclass
class Decision:
    conversions: list[Conversion] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def order_key(order_id: str | None, event_id: str) -> str:
    return order_id if order_id else f"event:{event_id}"


def decide(
    orders: Iterable[Order],
    coupon_by_code: Mapping[str, CouponState],
    clicks_by_contact: Mapping[int, Sequence[ClickRef]],
    window: timedelta,
    converted: set[str] | frozenset[str] = frozenset(),
) -> Decision:
    """Pure attribution of a batch of orders (see the module's rules)."""
    out = Decision()
    done = set(converted)
    used: set[int] = set()
    for order in sorted(orders, key=lambda o: (o.at, o.key)):
        if order.key in done:
            continue
        done.add(order.key)
        if order.coupon:
            c = coupon_by_code.get(order.coupon)
            reason = None
            if c is None:
                reason = "unknown"
            elif c.state == "redeemed" or c.id in used:
                reason = "used"
            elif c.state != "issued":
                reason = "not_issued"
            elif c.expires_at is not None and c.expires_at < order.at:
                reason = "expired"
            if reason is None and c is not None:
                used.add(c.id)
                out.conversions.append(
                    Conversion(
                        order,
                        "coupon",
                        c.campaign_id,
                        c.variant,
                        coupon_id=c.id,
                        journey_id=c.journey_id,
                    )
                )
                continue
            out.rejections.append(Rejection(order, order.coupon, reason or "unknown"))
        last: ClickRef | None = None
        for click in clicks_by_contact.get(order.contact_id, ()):
            if order.at - window <= click.at <= order.at and (
                last is None or (click.at, click.id) > (last.at, last.id)
            ):
                last = click
        if last is not None:
            out.conversions.append(
                Conversion(
                    order,
                    "click",
                    last.campaign_id,
                    last.variant,
                    click_id=last.id,
                    journey_id=last.journey_id,
                )
            )
    return out


def attribute_orders(
    conn: Connection, tenant_id: int, orders: Sequence[Order], now: datetime
) -> Decision:
    """Attribute new orders (see the module docstring); returns what was stored."""
    if not orders:
        return Decision()
    scope = TenantScope(tenant_id)
    window = timedelta(days=links.settings_of(conn, tenant_id).attribution_days)
    keys = sorted({o.key for o in orders})
    converted = {
        r[0] for r in fetch_in(conn, scope, conversions, ("order_key",), "order_key", keys)
    }
    wanted = sorted({o.coupon for o in orders if o.coupon})
    coupon_by_code = {
        code: CouponState(int(cid), state, camp, var, exp, jny)
        for cid, code, state, camp, var, exp, jny in (
            conn.execute(
                scope.select(
                    coupons,
                    coupons.c.id,
                    coupons.c.code,
                    coupons.c.state,
                    coupons.c.campaign_id,
                    coupons.c.variant,
                    coupons.c.expires_at,
                    coupons.c.journey_id,
                ).where(coupons.c.code.in_(wanted))
            ).all()
            if wanted
            else []
        )
    }
    contact_ids = sorted({o.contact_id for o in orders})
    earliest = min(o.at for o in orders) - window
    latest = max(o.at for o in orders)
    by_contact: dict[int, list[ClickRef]] = defaultdict(list)
    for r in conn.execute(
        scope.select(
            clicks,
            clicks.c.id,
            clicks.c.contact_id,
            clicks.c.at,
            clicks.c.campaign_id,
            clicks.c.variant,
            clicks.c.journey_id,
        ).where(
            clicks.c.contact_id.in_(contact_ids),
            clicks.c.at >= earliest,
            clicks.c.at <= latest,
            clicks.c.bot.is_(None),
            sa.or_(clicks.c.campaign_id.is_not(None), clicks.c.journey_id.is_not(None)),
        )
    ):
        by_contact[r.contact_id].append(
            ClickRef(r.id, r.contact_id, r.at, r.campaign_id, r.variant, r.journey_id)
        )
    decision = decide(orders, coupon_by_code, by_contact, window, converted)

    redeem = {c.coupon_id: c for c in decision.conversions if c.coupon_id is not None}
    if redeem:
        won = set(
            conn.execute(
                scope.update(coupons)
                .where(coupons.c.id.in_(list(redeem)), coupons.c.state == "issued")
                .values(
                    state="redeemed",
                    redeemed_at=now,
                    order_key=sa.case(
                        {cid: c.order.key for cid, c in redeem.items()}, value=coupons.c.id
                    ),
                )
                .returning(coupons.c.id)
            ).scalars()
        )
        for cid, conv in redeem.items():
            if cid not in won:  # redeemed by a concurrent request since we read it
                decision.conversions.remove(conv)
                decision.rejections.append(Rejection(conv.order, conv.order.coupon or "", "used"))
    rows: list[dict[str, Any]] = [
        {
            "order_key": c.order.key,
            "event_id": c.order.event_id,
            "contact_id": c.order.contact_id,
            "campaign_id": c.campaign_id,
            "journey_id": c.journey_id,
            "variant": c.variant,
            "method": c.method,
            "coupon_id": c.coupon_id,
            "click_id": c.click_id,
            "amount_fen": c.order.amount_fen,
            "ordered_at": c.order.at,
            "created_at": now,
        }
        for c in decision.conversions
    ]
    scope.insert_ignore(conn, conversions, rows)
    scope.insert_many(
        conn,
        coupon_rejections,
        [
            {"order_key": r.order.key, "code": r.code[:64], "reason": r.reason, "at": now}
            for r in decision.rejections
        ],
    )
    return decision


def orders_from_events(events: Iterable[Any], ids: Mapping[str, int]) -> list[Order]:
    """The orders among ingested events (:class:`hongyan.contacts.events.Event`)."""
    return [
        Order(
            key=order_key(e.order_id, e.event_id),
            event_id=e.event_id,
            contact_id=ids[e.phone],
            at=e.occurred_at,
            amount_fen=e.amount_fen or 0,
            coupon=codes.normalise_coupon(e.coupon_code) if e.coupon_code else None,
        )
        for e in events
        if e.kind == "order"
    ]

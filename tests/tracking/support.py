"""Shared helpers for tracking tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hongyan.contacts import events
from hongyan.runtime import Runtime
from hongyan.tracking import issue
from hongyan.tracking.clicks import COLUMNS as CLICK_COLUMNS


@dataclass(frozen=True)
class Req:
    tenant_id: int
    campaign_id: int | None
    variant: str | None
    contact_ids: list[int]
    link_url: str | None
    coupon_pool_id: int | None
    now: datetime
    expires_at: datetime | None
    journey_id: int | None = None


def contacts_for(runtime: Runtime, tenant_id: int, phones: list[str]) -> list[int]:
    """Contact ids for numbers (made through the events path, as a shop's browse events)."""
    now = runtime.clock.now()
    batch = [events.Event(f"browse-{p}", "browse", p, now - timedelta(days=30)) for p in phones]
    with runtime.engine.begin() as conn:
        events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, batch)
        ids, _ = events._contact_ids(conn, runtime.keyring, runtime.clock, tenant_id, phones)
    return [ids[p] for p in phones]


def issue_for(runtime: Runtime, **kw: Any) -> dict[str, list[str]]:
    now = runtime.clock.now()
    defaults: dict[str, Any] = {
        "campaign_id": 1,
        "variant": "A",
        "link_url": None,
        "coupon_pool_id": None,
        "now": now,
        "expires_at": now + timedelta(days=14),
    }
    req = Req(**{**defaults, **kw})
    with runtime.engine.begin() as conn:
        return issue.per_recipient(conn, req)


def order(
    runtime: Runtime,
    tenant_id: int,
    event_id: str,
    phone: str,
    at: datetime,
    amount_fen: int,
    coupon: str | None = None,
) -> None:
    e = events.Event(
        event_id, "order", phone, at, order_id=event_id, amount_fen=amount_fen, coupon_code=coupon
    )
    with runtime.engine.begin() as conn:
        events.ingest(conn, runtime.clock, runtime.keyring, tenant_id, [e])


def plan_messages(
    runtime: Runtime, tenant_id: int, campaign_id: int, rows: list[dict[str, Any]]
) -> None:
    """A campaign's messages in given states, by one set-based insert (what a materialisation
    writes, then the dispatcher's moves): each row names variant, contact_id, state and may
    name reason, channel, parts, carrier, submitted (bool). The contact's number province and
    city are copied onto its message, as materialisation does."""
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import contacts, messages

    now = runtime.clock.now()
    scope = TenantScope(tenant_id)
    ids = [r["contact_id"] for r in rows if r["contact_id"] is not None]
    with runtime.engine.connect() as conn:
        place = {
            c.id: (c.number_province, c.number_city)
            for c in conn.execute(
                scope.select(
                    contacts, contacts.c.id, contacts.c.number_province, contacts.c.number_city
                ).where(contacts.c.id.in_(ids))
            )
        }
    values = [
        {
            "lane": 2,
            "category": "marketing",
            "source": "campaign",
            "dest_cipher": b"x",
            "dest_index": bytes(32),
            "dest_masked": "138****0000",
            "body": "【鸿雁】hi",
            "encoding": "ucs2",
            "parts": r.get("parts", 1),
            "state": r["state"],
            "due_at": now,
            "expires_at": now + timedelta(days=1),
            "created_at": now,
            "submitted_at": now if r.get("submitted", r["state"] != "planned") else None,
            "channel": r.get("channel", "sbx"),
            "carrier": r.get("carrier", "cmcc"),
            "reason": r.get("reason"),
            "campaign_id": campaign_id,
            "variant": r["variant"],
            "contact_id": r["contact_id"],
            "number_province": place.get(r["contact_id"], (None, None))[0],
            "number_city": place.get(r["contact_id"], (None, None))[1],
        }
        for r in rows
    ]
    with runtime.engine.begin() as conn:
        scope.insert_many(conn, messages, values)


def click_row(**fields: Any) -> tuple[Any, ...]:
    """A click as the recorder stores it (clicks.COLUMNS order), by column name."""
    unknown = set(fields) - set(CLICK_COLUMNS)
    assert not unknown, unknown
    return tuple(fields.get(c) for c in CLICK_COLUMNS)

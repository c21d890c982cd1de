"""Emitting events: one ``webhook_deliveries`` row per subscribed endpoint, in the caller's
transaction, so an event exists exactly when the change that caused it was committed.

Event types: ``message.status`` (a message reached a final state, or went back to planned after a
failed attempt is *not* an event), ``message.reply`` (a recipient replied), ``message.opt_out``
(a reply unsubscribed the number). An endpoint subscribed to ``*`` gets every type.

Every payload starts with ``id`` (``evt_…``, one per event, the same for every endpoint that
receives it), ``type`` and ``created_at``; the event's own fields follow. Receivers de-duplicate
retries by the ``X-Hongyan-Delivery`` header (one per event and endpoint).

A reply's full number (``reply.from``) is not stored with the delivery: phone numbers exist at
rest only encrypted. It is kept as ``null`` and the worker fills it in at send time from the
encrypted inbox row named by ``reply.id`` (:func:`hongyan.webhooks.delivery.fill_numbers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import webhook_deliveries, webhook_endpoints

EVENT_TYPES = ("message.status", "message.reply", "message.opt_out")


@dataclass(frozen=True)
class Event:
    tenant_id: int
    type: str
    payload: dict[str, Any]


def emit(conn: Connection, clock: Clock, events: Sequence[Event]) -> int:
    """Queue each event for every active endpoint of its tenant that wants it; returns rows."""
    if not events:
        return 0
    tenants = {e.tenant_id for e in events}
    rows = conn.execute(
        unscoped(
            sa.select(
                webhook_endpoints.c.id, webhook_endpoints.c.tenant_id, webhook_endpoints.c.events
            ).where(
                webhook_endpoints.c.tenant_id.in_(tenants),
                webhook_endpoints.c.active.is_(True),
            ),
            "one lookup for the endpoints of every tenant in a dispatcher batch",
        )
    ).all()
    if not rows:
        return 0
    endpoints: dict[int, list[tuple[int, set[str]]]] = {}
    for r in rows:
        endpoints.setdefault(r.tenant_id, []).append((r.id, set(r.events or [])))
    now = clock.now()
    by_tenant: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        head = {"id": f"evt_{uuid4().hex}", "type": e.type, "created_at": now.isoformat()}
        payload = at_rest(e.payload)
        for endpoint_id, wanted in endpoints.get(e.tenant_id, []):
            if e.type in wanted or "*" in wanted:
                by_tenant.setdefault(e.tenant_id, []).append(
                    {
                        "endpoint_id": endpoint_id,
                        "event": e.type,
                        "payload": {**head, **payload},
                        "state": "pending",
                        "attempts": 0,
                        "next_at": now,
                        "created_at": now,
                    }
                )
    for tenant_id, items in by_tenant.items():
        TenantScope(tenant_id).insert_many(conn, webhook_deliveries, items)
    return sum(len(v) for v in by_tenant.values())


def at_rest(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as stored: a reply's full number blanked (the worker restores it)."""
    reply = payload.get("reply")
    if isinstance(reply, dict) and reply.get("from") is not None:
        return {**payload, "reply": {**reply, "from": None}}
    return payload

"""A tenant's webhook endpoints and their delivery log: what the API and the CLI call.

Secrets are ``whsec_`` + 256 random bits (URL-safe base64), shown once at creation and at
rotation, stored AES-GCM encrypted under the context ``tenant:<id>:webhook-secret``. A rotated
secret takes effect at once: every attempt from then on, retries of older events included, is
signed with the new one. Each change is written to the tenant's audit log (never the secret).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.db.scope import TenantScope
from hongyan.db.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.security.keyring import KeyRing
from hongyan.settings import Settings
from hongyan.webhooks.policy import (
    TEST_EVENT,
    AddressRefused,
    InvalidWebhookUrl,
    check_events,
    check_url_shape,
    forbidden_address,
)

__all__ = [
    "DEFAULT_EVENTS",
    "MAX_ENDPOINTS",
    "Created",
    "Page",
    "UrlPolicy",
    "create",
    "delete",
    "deliveries",
    "delivery",
    "get",
    "listing",
    "new_secret",
    "redeliver",
    "rotate_secret",
    "secret_context",
    "send_test",
    "update",
]

MAX_ENDPOINTS = 20
DEFAULT_EVENTS = ("message.status", "message.reply", "message.opt_out")
DELIVERY_STATES = ("pending", "sending", "delivered", "dead")
Resolver = Callable[[str, int], Sequence[str]]


class EndpointNotFound(NotFound):
    code = "webhook_not_found"
    message_en = "No such webhook endpoint"
    message_zh = "找不到该 Webhook"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"
    message_en = "No such webhook delivery"
    message_zh = "找不到该 Webhook 投递记录"


class TooManyEndpoints(Conflict):
    code = "too_many_webhooks"
    message_en = f"A tenant may have at most {MAX_ENDPOINTS} webhook endpoints"
    message_zh = f"每个租户最多可配置 {MAX_ENDPOINTS} 个 Webhook"


class EndpointInactive(Conflict):
    code = "webhook_inactive"
    message_en = "The webhook endpoint is deactivated; activate it first"
    message_zh = "该 Webhook 已停用，请先启用"


class NotRedeliverable(Conflict):
    code = "webhook_delivery_not_dead"
    message_en = "Only a dead delivery (retries exhausted or stopped) can be redelivered"
    message_zh = "只有已放弃（重试用尽或已停止）的投递可以重新投递"


def secret_context(tenant_id: int) -> str:
    return f"tenant:{tenant_id}:webhook-secret"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs a webhook may have; ``from_settings`` is the one place that decides."""

    https_only: bool
    allow_private: bool
    resolver: Resolver = _resolve

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(
            https_only=settings.env == "production",
            allow_private=settings.webhook_allow_private,
        )

    def check(self, url: str) -> str:
        """The URL stripped, or a typed error: its shape, then where its host resolves."""
        url = url.strip()
        parts = check_url_shape(url, https_only=self.https_only)
        if self.allow_private:
            return url
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise InvalidWebhookUrl(
                f"The host {host!r} does not resolve", f"主机 {host!r} 无法解析"
            ) from exc
        if not addresses:
            raise InvalidWebhookUrl(
                f"The host {host!r} does not resolve", f"主机 {host!r} 无法解析"
            )
        refused = sorted({a for a in addresses if forbidden_address(a)})
        if refused:
            raise AddressRefused(details={"host": host, "addresses": refused})
        return url


@dataclass(frozen=True)
class Created:
    endpoint: dict[str, Any]
    secret: str  # the only time it is shown


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_before: int | None  # pass as ``before`` for the next (older) page


_ENDPOINT_COLUMNS = (
    webhook_endpoints.c.id,
    webhook_endpoints.c.url,
    webhook_endpoints.c.events,
    webhook_endpoints.c.description,
    webhook_endpoints.c.active,
    webhook_endpoints.c.created_at,
)


def _view(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["events"] = list(out["events"] or [])
    return out


def listing(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    scope = TenantScope(tenant_id)
    stmt = scope.select(webhook_endpoints, *_ENDPOINT_COLUMNS).order_by(webhook_endpoints.c.id)
    return [_view(r) for r in conn.execute(stmt)]


def get(conn: Connection, tenant_id: int, endpoint_id: int) -> dict[str, Any]:
    scope = TenantScope(tenant_id)
    stmt = scope.select(webhook_endpoints, *_ENDPOINT_COLUMNS).where(
        webhook_endpoints.c.id == endpoint_id
    )
    row = conn.execute(stmt).first()
    if row is None:
        raise EndpointNotFound()
    return _view(row)


def create(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    policy: UrlPolicy,
    tenant_id: int,
    *,
    url: str,
    events: Sequence[str] = DEFAULT_EVENTS,
    description: str = "",
    actor: str,
    ip: str | None = None,
) -> Created:
    """A new endpoint, active, with a fresh secret (returned here and never again)."""
    wanted = check_events(list(events))  # the cheap checks before the DNS lookup
    description = description.strip()
    if len(description) > 200:
        raise ValidationFailed(
            "The description may have at most 200 characters", "描述最多 200 个字符"
        )
    url = policy.check(url)
    scope = TenantScope(tenant_id)
    count = conn.execute(scope.select(webhook_endpoints, sa.func.count())).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise TooManyEndpoints()
    secret = new_secret()
    result = conn.execute(
        scope.insert(webhook_endpoints),
        {
            "url": url,
            "secret_cipher": keyring.encrypt(secret, secret_context(tenant_id)),
            "events": wanted,
            "description": description,
            "active": True,
            "created_at": clock.now(),
        },
    )
    assert result.inserted_primary_key is not None
    endpoint_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.create",
        target=f"webhook:{endpoint_id}",
        detail={"url": url, "events": wanted},
        ip=ip,
    )
    return Created(get(conn, tenant_id, endpoint_id), secret)


def update(
    conn: Connection,
    clock: Clock,
    policy: UrlPolicy,
    tenant_id: int,
    endpoint_id: int,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    active: bool | None = None,
    description: str | None = None,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Change what is given. Deactivating stops the endpoint's waiting deliveries (dead, with
    the reason); they can be redelivered once it is active again."""
    current = get(conn, tenant_id, endpoint_id)
    values: dict[str, Any] = {}
    if url is not None:
        values["url"] = policy.check(url)
    if events is not None:
        values["events"] = check_events(list(events))
    if description is not None:
        description = description.strip()
        if len(description) > 200:
            raise ValidationFailed(
                "The description may have at most 200 characters", "描述最多 200 个字符"
            )
        values["description"] = description
    if active is not None:
        values["active"] = active
    changed = {k: v for k, v in values.items() if current.get(k) != v}
    if not changed:
        return current
    scope = TenantScope(tenant_id)
    conn.execute(
        scope.update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(**changed)
    )
    stopped = 0
    if changed.get("active") is False:
        d = webhook_deliveries.c
        stopped = conn.execute(
            scope.update(webhook_deliveries)
            .where(d.endpoint_id == endpoint_id, d.state == "pending")
            .values(state="dead", last_error="endpoint deactivated", lease_owner=None)
        ).rowcount
    detail: dict[str, Any] = {"changed": sorted(changed)}
    if "url" in changed:
        detail["url"] = changed["url"]
    if stopped:
        detail["stopped_deliveries"] = stopped
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.update",
        target=f"webhook:{endpoint_id}",
        detail=detail,
        ip=ip,
    )
    return get(conn, tenant_id, endpoint_id)


def delete(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    endpoint_id: int,
    *,
    actor: str,
    ip: str | None = None,
) -> None:
    """Remove the endpoint with its deliveries and their log; a worker holding one of its
    deliveries finds it gone and drops the result."""
    found = get(conn, tenant_id, endpoint_id)
    scope = TenantScope(tenant_id)
    # Children first, explicitly: the same result with or without foreign-key cascades.
    d = webhook_deliveries.c
    mine = sa.select(d.id).where(d.endpoint_id == endpoint_id, scope.owns(webhook_deliveries))
    conn.execute(scope.delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(mine)))
    conn.execute(scope.delete(webhook_deliveries).where(d.endpoint_id == endpoint_id))
    conn.execute(scope.delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.delete",
        target=f"webhook:{endpoint_id}",
        detail={"url": found["url"]},
        ip=ip,
    )


def rotate_secret(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    tenant_id: int,
    endpoint_id: int,
    *,
    actor: str,
    ip: str | None = None,
) -> str:
    """A new secret for the endpoint, effective for every attempt from now on."""
    get(conn, tenant_id, endpoint_id)
    secret = new_secret()
    conn.execute(
        TenantScope(tenant_id)
        .update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(secret_cipher=keyring.encrypt(secret, secret_context(tenant_id)))
    )
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.rotate_secret",
        target=f"webhook:{endpoint_id}",
        ip=ip,
    )
    return secret


def send_test(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    endpoint_id: int,
    *,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Queue a ``webhook.test`` event for this endpoint alone (whatever it subscribes to);
    the worker sends it like any other, signed and logged. Returns the delivery."""
    endpoint = get(conn, tenant_id, endpoint_id)
    if not endpoint["active"]:
        raise EndpointInactive()
    now = clock.now()
    payload = {
        "id": f"evt_{uuid4().hex}",
        "type": TEST_EVENT,
        "created_at": now.isoformat(),
        "webhook": {"id": endpoint_id, "url": endpoint["url"]},
    }
    scope = TenantScope(tenant_id)
    result = conn.execute(
        scope.insert(webhook_deliveries),
        {
            "endpoint_id": endpoint_id,
            "event": TEST_EVENT,
            "payload": payload,
            "state": "pending",
            "attempts": 0,
            "next_at": now,
            "created_at": now,
        },
    )
    assert result.inserted_primary_key is not None
    delivery_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.test",
        target=f"webhook:{endpoint_id}",
        detail={"delivery": delivery_id},
        ip=ip,
    )
    return delivery(conn, tenant_id, delivery_id)


_DELIVERY_COLUMNS = tuple(
    c for c in webhook_deliveries.c if c.name not in ("tenant_id", "lease_owner", "lease_until")
)


def _with_attempts(
    conn: Connection, scope: TenantScope, rows: Sequence[Any]
) -> list[dict[str, Any]]:
    items = [dict(r._mapping) for r in rows]
    if not items:
        return []
    a = webhook_attempts.c
    log: dict[int, list[dict[str, Any]]] = {}
    stmt = (
        scope.select(webhook_attempts, a.delivery_id, a.at, a.status_code, a.error, a.duration_ms)
        .where(a.delivery_id.in_([i["id"] for i in items]))
        .order_by(a.id.desc())
    )
    for r in conn.execute(stmt):
        entry = dict(r._mapping)
        log.setdefault(entry.pop("delivery_id"), []).append(entry)
    for item in items:
        item["attempt_log"] = log.get(item["id"], [])
        if item["state"] in ("delivered", "dead"):
            item["next_at"] = None
    return items


def delivery(conn: Connection, tenant_id: int, delivery_id: int) -> dict[str, Any]:
    scope = TenantScope(tenant_id)
    stmt = scope.select(webhook_deliveries, *_DELIVERY_COLUMNS).where(
        webhook_deliveries.c.id == delivery_id
    )
    rows = conn.execute(stmt).all()
    if not rows:
        raise DeliveryNotFound()
    return _with_attempts(conn, scope, rows)[0]


def deliveries(
    conn: Connection,
    tenant_id: int,
    endpoint_id: int,
    *,
    limit: int = 20,
    before: int | None = None,
    state: str | None = None,
) -> Page:
    """An endpoint's deliveries, newest first, each with its attempts (newest first).

    Paged by id: pass the returned ``next_before`` as ``before`` for the next page.
    """
    get(conn, tenant_id, endpoint_id)
    if state is not None and state not in DELIVERY_STATES:
        raise ValidationFailed(
            f"Unknown state {state!r}; use {', '.join(DELIVERY_STATES)}",
            f"未知状态 {state!r}；可用：{'、'.join(DELIVERY_STATES)}",
        )
    limit = max(1, min(limit, 100))
    scope = TenantScope(tenant_id)
    d = webhook_deliveries.c
    stmt = scope.select(webhook_deliveries, *_DELIVERY_COLUMNS).where(d.endpoint_id == endpoint_id)
    if before is not None:
        stmt = stmt.where(d.id < before)
    if state is not None:
        stmt = stmt.where(d.state == state)
    rows = conn.execute(stmt.order_by(d.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = _with_attempts(conn, scope, rows)
    return Page(items, items[-1]["id"] if more and items else None)


def redeliver(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    delivery_id: int,
    *,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Send a dead delivery again, now, with a fresh retry schedule; its log is kept."""
    found = delivery(conn, tenant_id, delivery_id)
    if found["state"] != "dead":
        raise NotRedeliverable(details={"state": found["state"]})
    if not get(conn, tenant_id, found["endpoint_id"])["active"]:
        raise EndpointInactive()
    d = webhook_deliveries.c
    done = conn.execute(
        TenantScope(tenant_id)
        .update(webhook_deliveries)
        .where(d.id == delivery_id, d.state == "dead")
        .values(
            state="pending", attempts=0, next_at=clock.now(), lease_owner=None, lease_until=None
        )
    ).rowcount
    if done != 1:  # changed under us
        raise NotRedeliverable()
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="webhook.redeliver",
        target=f"webhook:{found['endpoint_id']}",
        detail={"delivery": delivery_id},
        ip=ip,
    )
    return delivery(conn, tenant_id, delivery_id)

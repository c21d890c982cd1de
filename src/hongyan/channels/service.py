"""The operator's channels and the tenants' routes, as stored in the database.

Secrets (an SMPP password, a provider's access key secret) are encrypted with the key ring under
the context ``channel:<name>``; they are decrypted only when a dispatcher or a callback needs them
and are never returned by a listing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.channels import registry
from hongyan.channels.base import CARRIERS, ChannelSpec
from hongyan.clock import Clock
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import channels, routes
from hongyan.dispatch.states import Lane
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security.keyring import KeyRing

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
WHY = "channels are the operator's, shared by every tenant"


def secret_context(name: str) -> str:
    return f"channel:{name}"


class UnknownChannel(NotFound):
    code = "unknown_channel"
    message_zh = "找不到该通道"
    message_en = "No such channel"


def _carriers(values: Sequence[str]) -> str:
    wanted = [v.strip().lower() for v in values if v.strip()]
    bad = [v for v in wanted if v not in CARRIERS]
    if bad:
        raise ValidationFailed(
            f"Unknown carrier {bad[0]!r}; known: {', '.join(CARRIERS)}",
            f"未知运营商 {bad[0]!r}，可选：{', '.join(CARRIERS)}",
        )
    return ",".join(sorted(set(wanted)))


def _limits(rate: float, window: int, binds: int) -> None:
    if not (rate >= 0 and window >= 1 and binds >= 1):  # NaN fails too
        raise ValidationFailed(
            "rate must be >= 0, window and binds >= 1", "速率不能为负，窗口和连接数至少为 1"
        )


def _price(value: str | Decimal) -> Decimal:
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise ValidationFailed("price_per_part is not a number", "单价不是数字") from None
    if not price.is_finite() or not 0 <= price < 1_000_000:
        raise ValidationFailed(
            "price_per_part must be from 0 to 999999.9999", "单价须在 0 到 999999.9999 之间"
        )
    return price


def add_channel(
    conn: Connection,
    clock: Clock,
    keyring: KeyRing,
    *,
    name: str,
    kind: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
    rate: float = 0.0,
    window: int = 10,
    binds: int = 1,
    carriers: Sequence[str] = (),
    price_per_part: str | Decimal = "0",
    currency: str = "CNY",
    priority: int = 100,
) -> ChannelSpec:
    if not NAME.fullmatch(name):
        raise ValidationFailed(
            "A channel name is lower-case letters, digits, - and _ (at most 64)",
            "通道名称只能包含小写字母、数字、- 和 _（最多 64 个字符）",
        )
    if kind not in registry.kinds():
        raise ValidationFailed(
            f"Unknown channel kind {kind!r}; known: {', '.join(registry.kinds())}",
            f"未知通道类型 {kind!r}，可选：{', '.join(registry.kinds())}",
        )
    _limits(rate, window, binds)
    price = _price(price_per_part)
    now = clock.now()
    row = {
        "name": name,
        "kind": kind,
        "enabled": True,
        "priority": priority,
        "config": dict(config),
        "secret_cipher": keyring.encrypt(json.dumps(dict(secrets)), secret_context(name))
        if secrets
        else None,
        "rate": float(rate),
        "window": int(window),
        "binds": int(binds),
        "carriers": _carriers(carriers),
        "price_per_part": price,
        "currency": currency.upper(),
        "created_at": now,
        "updated_at": now,
    }
    try:
        with conn.begin_nested():
            conn.execute(unscoped(sa.insert(channels), WHY), row)
    except IntegrityError:
        raise Conflict(f"A channel named {name!r} exists", f"通道 {name!r} 已存在") from None
    return get_spec(conn, keyring, name)


def update_channel(conn: Connection, clock: Clock, name: str, **values: Any) -> None:
    """Change rate, window, binds, priority, enabled or carriers of a channel."""
    allowed = {"rate", "window", "binds", "priority", "enabled", "carriers", "price_per_part"}
    unknown = set(values) - allowed
    if unknown:
        raise ValidationFailed(f"Cannot change {sorted(unknown)}", f"不能修改 {sorted(unknown)}")
    if "carriers" in values:
        values["carriers"] = _carriers(values["carriers"])
    _limits(values.get("rate", 0), values.get("window", 1), values.get("binds", 1))
    if "price_per_part" in values:
        values["price_per_part"] = _price(values["price_per_part"])
    result = conn.execute(
        unscoped(
            sa.update(channels)
            .where(channels.c.name == name)
            .values(**values, updated_at=clock.now()),
            WHY,
        )
    )
    if result.rowcount != 1:
        raise UnknownChannel()


def remove_channel(conn: Connection, name: str) -> None:
    result = conn.execute(unscoped(sa.delete(channels).where(channels.c.name == name), WHY))
    if result.rowcount != 1:
        raise UnknownChannel()


def _spec(row: Any, keyring: KeyRing) -> ChannelSpec:
    secrets: dict[str, str] = {}
    if row.secret_cipher is not None:
        secrets = json.loads(keyring.decrypt(bytes(row.secret_cipher), secret_context(row.name)))
    return ChannelSpec(
        name=row.name,
        kind=row.kind,
        config=dict(row.config or {}),
        secrets=secrets,
        rate=float(row.rate),
        window=int(row.window),
        binds=int(row.binds),
        carriers=frozenset(c for c in row.carriers.split(",") if c),
        price_per_part=Decimal(str(row.price_per_part)),
        currency=row.currency,
        enabled=bool(row.enabled),
        priority=int(row.priority),
    )


def load_specs(
    conn: Connection, keyring: KeyRing, *, enabled_only: bool = True
) -> list[ChannelSpec]:
    stmt = sa.select(channels).order_by(channels.c.priority, channels.c.name)
    if enabled_only:
        stmt = stmt.where(channels.c.enabled.is_(True))
    return [_spec(r, keyring) for r in conn.execute(unscoped(stmt, WHY))]


def get_spec(conn: Connection, keyring: KeyRing, name: str) -> ChannelSpec:
    row = conn.execute(unscoped(sa.select(channels).where(channels.c.name == name), WHY)).first()
    if row is None:
        raise UnknownChannel()
    return _spec(row, keyring)


def list_channels(conn: Connection) -> list[dict[str, Any]]:
    """Every channel without its secrets, for the operator's listing."""
    cols = [c for c in channels.c if c.name != "secret_cipher"]
    rows = conn.execute(
        unscoped(sa.select(*cols).order_by(channels.c.priority, channels.c.name), WHY)
    ).mappings()
    out = []
    for r in rows:
        item = dict(r)
        item["price_per_part"] = str(item["price_per_part"])
        item["carriers"] = [c for c in item["carriers"].split(",") if c]
        out.append(item)
    return out


# -- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    tenant_id: int
    lane: int  # -1: every lane
    carrier: str  # '*': any
    channels: tuple[str, ...]


def set_route(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    channel_names: Sequence[str],
    *,
    lane: Lane | None = None,
    carrier: str | None = None,
) -> Route:
    """Set (or with no channels, remove) a tenant's route for a lane and carrier."""
    lane_value = -1 if lane is None else int(lane)
    carrier_value = "*" if carrier in (None, "", "*") else _carriers([carrier or ""])
    known = {
        r.name
        for r in conn.execute(
            unscoped(sa.select(channels.c.name).where(channels.c.name.in_(channel_names)), WHY)
        )
    }
    missing = [n for n in channel_names if n not in known]
    if missing:
        raise UnknownChannel(f"No channel named {missing[0]!r}", f"找不到通道 {missing[0]!r}")
    scope = TenantScope(tenant_id)
    where = (routes.c.lane == lane_value, routes.c.carrier == carrier_value)
    conn.execute(scope.delete(routes).where(*where))
    if channel_names:
        conn.execute(
            scope.insert(routes),
            {
                "lane": lane_value,
                "carrier": carrier_value,
                "channels": list(channel_names),
                "created_at": clock.now(),
            },
        )
    return Route(tenant_id, lane_value, carrier_value, tuple(channel_names))


def tenant_routes(conn: Connection, tenant_id: int) -> list[Route]:
    rows = conn.execute(TenantScope(tenant_id).select(routes).order_by(routes.c.id))
    return [Route(r.tenant_id, r.lane, r.carrier, tuple(r.channels)) for r in rows]


def all_routes(conn: Connection) -> dict[int, list[Route]]:
    """Every tenant's routes (the dispatcher's cache)."""
    rows = conn.execute(unscoped(sa.select(routes), "the dispatcher routes every tenant"))
    out: dict[int, list[Route]] = {}
    for r in rows:
        out.setdefault(r.tenant_id, []).append(
            Route(r.tenant_id, r.lane, r.carrier, tuple(r.channels))
        )
    return out

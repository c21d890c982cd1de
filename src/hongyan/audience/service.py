"""A tenant's audience settings (lifecycle thresholds, RFM splits, location attribute, how often
scores are recomputed), its stores, and the schema and context its rules are checked and
compiled with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.audience.compiler import Context
from hongyan.audience.rules import Schema, StoreRef, build_schema
from hongyan.audience.scoring import Cuts, Splits, Thresholds
from hongyan.clock import Clock
from hongyan.contacts import fields
from hongyan.db.scope import TenantScope
from hongyan.db.tables import audience_settings, rfm_cuts, segments, stores
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.tenants import service as tenants


@dataclass
class Settings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    splits: Splits = field(default_factory=Splits)
    location_attribute: str | None = None
    recompute_hours: int = 24
    computed_at: datetime | None = None
    computed: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "lifecycle": asdict(self.thresholds),
            "rfm_splits": asdict(self.splits),
            "location_attribute": self.location_attribute,
            "recompute_hours": self.recompute_hours,
            "computed_at": self.computed_at.isoformat() if self.computed_at else None,
            "computed": self.computed,
        }


def get_settings(conn: Connection, tenant_id: int) -> Settings:
    row = conn.execute(TenantScope(tenant_id).select(audience_settings)).mappings().first()
    if row is None:
        return Settings()
    return Settings(
        Thresholds(row["new_days"], row["active_days"], row["dormant_days"], row["lost_days"]),
        Splits(row["r_split"], row["f_split"], row["m_split"]),
        row["location_attribute"],
        row["recompute_hours"],
        row["computed_at"],
        dict(row["computed"] or {}),
    )


def get_cuts(conn: Connection, tenant_id: int) -> Cuts | None:
    """The tenant's RFM cut points and score sums as of its last recompute (None: never, or no
    buyers then)."""
    row = conn.execute(TenantScope(tenant_id).select(rfm_cuts)).mappings().first()
    if row is None or not row["buyers"]:
        return None
    return Cuts(
        n=int(row["buyers"]),
        r=tuple(row[f"r{k}"] for k in range(2, 6)),
        f=tuple(int(row[f"f{k}"]) for k in range(2, 6)),  # type: ignore[arg-type]
        m=tuple(int(row[f"m{k}"]) for k in range(2, 6)),  # type: ignore[arg-type]
        sums=(int(row["r_sum"]), int(row["f_sum"]), int(row["m_sum"])),
        computed_at=row["computed_at"],
    )


def _write(conn: Connection, tenant_id: int, values: dict[str, Any]) -> None:
    scope = TenantScope(tenant_id)
    ins = scope.dialect_insert(conn, audience_settings)
    conn.execute(
        ins.values(tenant_id=tenant_id, **values).on_conflict_do_update(
            index_elements=["tenant_id"], set_=values
        )
    )


def update_settings(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    thresholds: Thresholds | None = None,
    splits: Splits | None = None,
    location_attribute: str | bool | None = False,
    recompute_hours: int | None = None,
) -> Settings:
    """Change what is given (``location_attribute=None`` clears it; ``False`` leaves it)."""
    current = get_settings(conn, tenant_id)
    values: dict[str, Any] = {"updated_at": clock.now()}
    if thresholds is not None:
        t = thresholds.check()
        values.update(
            new_days=t.new_days,
            active_days=t.active_days,
            dormant_days=t.dormant_days,
            lost_days=t.lost_days,
        )
    if splits is not None:
        s = splits.check()
        values.update(r_split=s.r, f_split=s.f, m_split=s.m)
    if location_attribute is not False:
        if location_attribute is not None:
            defined = {d.name: d.type for d in fields.attribute_definitions(conn, tenant_id)}
            if defined.get(str(location_attribute)) != "text":
                raise ValidationFailed(
                    f"The location attribute must be a defined text attribute, not "
                    f"{location_attribute!r}",
                    f"位置属性须为已定义的文本属性，而不是“{location_attribute}”",
                )
        values["location_attribute"] = location_attribute
    if recompute_hours is not None:
        if isinstance(recompute_hours, bool) or not 1 <= recompute_hours <= 24 * 31:
            raise ValidationFailed("Recompute every 1 to 744 hours", "重新计算间隔须为 1–744 小时")
        values["recompute_hours"] = recompute_hours
    if current.computed_at is None and "computed" not in values:
        values.setdefault("computed", {})
    _write(conn, tenant_id, values)
    return get_settings(conn, tenant_id)


def record_run(conn: Connection, tenant_id: int, at: datetime, figures: dict[str, Any]) -> None:
    _write(conn, tenant_id, {"computed_at": at, "computed": figures, "updated_at": at})


# -- stores --------------------------------------------------------------------------------------


def list_stores(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(stores, stores.c.id, stores.c.name, stores.c.lat, stores.c.lon, stores.c.address)
        .order_by(stores.c.name)
    ).mappings()
    return [dict(r) for r in rows]


def add_store(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    name: str,
    lat: float | None = None,
    lon: float | None = None,
    address: str = "",
) -> dict[str, Any]:
    """A store at (lat, lon), or at the place its address names (district or city centre)."""
    from hongyan.audience import geo

    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise ValidationFailed(
            "A store needs a name (≤ 100 characters)", "门店名称须为 1–100 个字符"
        )
    if lat is None or lon is None:
        place = geo.places().in_text(address.strip()[:200]) if address.strip() else None
        if place is None:
            raise ValidationFailed(
                "Give the store's coordinates (lat, lon) or an address naming its district",
                "请提供门店坐标（纬度、经度）或包含区县的地址",
            )
        lat, lon = place.lat, place.lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValidationFailed(
            "Latitude −90…90, longitude −180…180", "纬度须在 −90…90，经度 −180…180"
        )
    scope = TenantScope(tenant_id)
    taken = conn.execute(
        scope.select(stores, stores.c.id).where(stores.c.name == name)
    ).scalar_one_or_none()
    if taken is not None:
        raise Conflict(f"A store named {name!r} exists", f"已有名为“{name}”的门店")
    new_id = conn.execute(
        scope.insert(stores)
        .values(name=name, lat=lat, lon=lon, address=address.strip()[:200], created_at=clock.now())
        .returning(stores.c.id)
    ).scalar_one()
    return {"id": int(new_id), "name": name, "lat": lat, "lon": lon, "address": address.strip()}


def remove_store(conn: Connection, tenant_id: int, store: int | str) -> None:
    col = stores.c.id if isinstance(store, int) else stores.c.name
    result = conn.execute(TenantScope(tenant_id).delete(stores).where(col == store))
    if result.rowcount != 1:
        raise NotFound(f"No store {store!r}", f"没有门店 {store!r}")


# -- schema and context ----------------------------------------------------------------------------


def load_schema(conn: Connection, tenant_id: int) -> Schema:
    """What this tenant's rules may test: fields, attributes, saved segments, stores."""
    scope = TenantScope(tenant_id)
    attrs = [(d.name, d.type, d.label) for d in fields.attribute_definitions(conn, tenant_id)]
    saved = {
        int(r.id): (r.name, r.rule)
        for r in conn.execute(
            scope.select(segments, segments.c.id, segments.c.name, segments.c.rule)
        )
    }
    store_refs = [
        StoreRef(int(s["id"]), s["name"], float(s["lat"]), float(s["lon"]))
        for s in list_stores(conn, tenant_id)
    ]
    tz = ZoneInfo(tenants.get_tenant_by_id(conn, tenant_id).timezone)
    return build_schema(attrs, tz=tz, segments=saved, stores=store_refs)


def context(conn: Connection, clock: Clock, tenant_id: int, schema: Schema) -> Context:
    now = clock.now()
    settings = get_settings(conn, tenant_id)
    return Context(
        scope=TenantScope(tenant_id),
        dialect=conn.dialect.name,
        now=now,
        today=now.astimezone(schema.tz).date(),
        thresholds=settings.thresholds,
        cuts=get_cuts(conn, tenant_id),
        splits=settings.splits,
    )


def count(conn: Connection, tenant_id: int, table: sa.Table) -> int:
    return int(conn.execute(TenantScope(tenant_id).select(table, sa.func.count())).scalar_one())

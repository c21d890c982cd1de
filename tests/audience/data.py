"""Random contacts with every kind of data a rule can test, stored through the tenant scope, and
the same data as plain records for the Python oracle."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hongyan.audience import geo, service
from hongyan.clock import Clock
from hongyan.contacts import fields
from hongyan.db.scope import TenantScope
from hongyan.db.tables import (
    consent_records,
    contact_activity,
    contact_interests,
    contact_locations,
    contact_tags,
    contacts,
)
from hongyan.runtime import Runtime

TEXTS = ("金卡", "银卡", "普通", "金卡会员", "a%b", "x_y", "上海徐汇")
CITIES = ("上海", "北京", "杭州", "上海市", None)
PROVINCES = ("上海", "北京", "浙江", None)
TAGS = ("vip", "老会员", "员工", "a%b", "x_y")
INTERESTS = ("果茶", "奶茶", "咖啡", "甜品")
STORES = (("徐汇店", 31.18, 121.43), ("杭州店", 30.27, 120.15))
ATTRIBUTES = (("等级", "text"), ("积分", "number"), ("生日券", "boolean"), ("到期", "date"))


def _maybe(rng: random.Random, value: Any, p: float = 0.75) -> Any:
    return value if rng.random() < p else None


def _time(rng: random.Random, now: datetime, days: int = 400) -> datetime:
    return now - timedelta(seconds=rng.randrange(days * 86400))


def build(runtime: Runtime, clock: Clock, tenant_id: int, n: int = 80, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    now = clock.now()
    scope = TenantScope(tenant_id)
    records: list[dict[str, Any]] = []
    with runtime.engine.begin() as conn:
        for name, kind in ATTRIBUTES:
            fields.define(conn, clock, tenant_id, name, kind)
        for name, lat, lon in STORES:
            service.add_store(conn, clock, tenant_id, name=name, lat=lat, lon=lon)
        for i in range(n):
            attrs: dict[str, Any] = {}
            if rng.random() < 0.7:
                attrs["等级"] = rng.choice(TEXTS) if rng.random() < 0.9 else 7  # wrong type too
            if rng.random() < 0.7:
                attrs["积分"] = rng.choice((rng.randrange(-5, 3000), rng.uniform(0, 100), "多"))
            if rng.random() < 0.6:
                attrs["生日券"] = rng.choice((True, False, "yes"))
            if rng.random() < 0.6:
                d = (now - timedelta(days=rng.randrange(-20, 60))).date().isoformat()
                attrs["到期"] = d if rng.random() < 0.9 else 20261111
            row = {
                "phone_index": rng.randbytes(32),
                "phone_cipher": b"x",
                "phone_masked": f"138****{i:04d}",
                "country": "CN",
                "carrier": _maybe(rng, rng.choice(("cmcc", "cucc", "ctcc", "cbn", "intl"))),
                "mvno": rng.random() < 0.2,
                "number_province": _maybe(rng, rng.choice(PROVINCES)),
                "number_city": _maybe(rng, rng.choice(CITIES)),
                "gender": _maybe(rng, rng.choice(("f", "m"))),
                "birth_month": _maybe(rng, rng.randrange(1, 13)),
                "birth_day": _maybe(rng, rng.randrange(1, 29)),
                "birth_decade": _maybe(rng, rng.choice((1970, 1980, 1990, 2000))),
                "province": _maybe(rng, rng.choice(PROVINCES)),
                "city": _maybe(rng, rng.choice(CITIES)),
                "attrs": attrs,
                "source": rng.choice(("import", "event", "api")),
                "created_at": _time(rng, now),
                "updated_at": now,
            }
            cid = conn.execute(
                scope.insert(contacts).values(**row).returning(contacts.c.id)
            ).scalar_one()
            rec: dict[str, Any] = {"id": int(cid), **row}
            rec["activity"] = _activity(conn, scope, rng, now, int(cid))
            rec["tags"] = set(rng.sample(TAGS, rng.randrange(0, 4)))
            for tag in rec["tags"]:
                conn.execute(
                    scope.insert(contact_tags).values(contact_id=cid, tag=tag, created_at=now)
                )
            rec["interests"] = {}
            for tag in rng.sample(INTERESTS, rng.randrange(0, 3)):
                events, weight, last_at = (
                    rng.randrange(1, 6),
                    rng.uniform(0.5, 20),
                    _time(rng, now, 90),
                )
                rec["interests"][tag] = (events, weight, last_at)
                conn.execute(
                    scope.insert(contact_interests).values(
                        contact_id=cid, tag=tag, events=events, weight=weight,
                        first_at=last_at - timedelta(days=3), last_at=last_at,
                    )
                )  # fmt: skip
            rec["consent"] = {}
            for k in range(rng.randrange(0, 4)):
                purpose = rng.choice(("marketing", "notification"))
                action = rng.choice(("granted", "revoked"))
                conn.execute(
                    scope.insert(consent_records).values(
                        phone_index=row["phone_index"], purpose=purpose, action=action,
                        source="test", proof="test", actor="test",
                        at=now - timedelta(days=10 - k),
                    )
                )  # fmt: skip
                rec["consent"][purpose] = action
            rec["location"] = None
            if rng.random() < 0.7:
                lat, lon = rng.uniform(29.8, 31.8), rng.uniform(119.8, 122.0)
                x, y, z = geo.unit_vector(lat, lon)
                conn.execute(
                    scope.insert(contact_locations).values(
                        contact_id=cid, lat=lat, lon=lon, x=x, y=y, z=z, source="coordinates",
                        updated_at=now,
                    )
                )  # fmt: skip
                rec["location"] = (lat, lon)
            records.append(rec)
        # the tenant's RFM cuts, by the recompute; the oracle's scores from the pure rules
        from hongyan.audience import recompute

        recompute.recompute_scores(conn, clock, tenant_id)
        _scores(records, service.get_settings(conn, tenant_id).splits)
    return records


def _activity(conn: Any, scope: TenantScope, rng: random.Random, now: datetime, cid: int) -> Any:
    if rng.random() < 0.2:
        return None
    orders = rng.choice((0, 0, 1, 2, 3, 5, 8, 12))
    last_order = _time(rng, now) if orders else None
    first_order = (last_order - timedelta(days=rng.randrange(0, 200))) if last_order else None
    act = {
        "contact_id": cid,
        "first_order_at": first_order,
        "last_order_at": last_order,
        "orders_count": orders,
        "revenue_fen": orders * rng.randrange(100, 50000),
        "last_browse_at": _maybe(rng, _time(rng, now), 0.5),
        "last_favourite_at": _maybe(rng, _time(rng, now), 0.3),
        "last_cart_at": _maybe(rng, _time(rng, now), 0.3),
        "last_signed_at": _maybe(rng, _time(rng, now), 0.3),
        "registered_at": _maybe(rng, _time(rng, now), 0.4),
        "updated_at": now,
    }
    seen = [v for k, v in act.items() if k.endswith("_at") and k != "updated_at" and v]
    act["last_interaction_at"] = max(seen) if seen else None
    conn.execute(scope.insert(contact_activity).values(**act))
    return act


def _scores(records: list[dict[str, Any]], splits: Any) -> None:
    """Each record's RFM scores and group by the documented method (ranks among the buyers,
    mean scores), computed here in Python from the records' aggregates."""
    from hongyan.audience import scoring

    buyers = [r for r in records if r["activity"] and r["activity"]["orders_count"] > 0]
    for r in records:
        r["scores"] = None
    if not buyers:
        return
    columns = {
        d: scoring.quantile_scores([b["activity"][c] for b in buyers])
        for d, c in scoring.DIMENSIONS.items()
    }
    means = tuple(sum(columns[d]) / len(buyers) for d in "rfm")
    for i, b in enumerate(buyers):
        r, f, m = (columns[d][i] for d in "rfm")
        b["scores"] = {
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "rfm_group": scoring.group(r, f, m, splits, means),  # type: ignore[arg-type]
        }


def ids(conn: Any, stmt: sa.Select[Any]) -> set[int]:
    return {int(i) for i in conn.execute(stmt).scalars()}


NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)

"""Coupon pools and per-recipient coupons.

A pool is ``generate`` (codes are drawn as they are issued, from the readable alphabet: it never
runs out) or ``import`` (the tenant's own codes, e.g. from its shop system: a fixed stock).
Issuing takes codes set-based: one ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP
LOCKED) RETURNING`` from an imported pool (two campaigns issuing from one pool at once take
different codes), or one bulk insert of drawn codes. All or nothing: a pool with fewer codes
than recipients raises :class:`CouponPoolExhausted` and has given none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.db.bulk import insert_rows
from hongyan.db.scope import TenantScope
from hongyan.db.tables import coupon_pools, coupons
from hongyan.tracking import codes
from hongyan.tracking.errors import (
    CouponPoolExhausted,
    CouponPoolExists,
    CouponPoolNotFound,
    TrackingInvalid,
)

KINDS = ("generate", "import")
_CODE = re.compile(r"[0-9A-Z]{4,32}")


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    kind: str
    amount_fen: int | None
    available: int
    issued: int
    redeemed: int

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def create_pool(
    conn: Connection,
    tenant_id: int,
    now: datetime,
    *,
    name: str,
    kind: str = "generate",
    amount_fen: int | None = None,
) -> int:
    name = name.strip()
    if not name or len(name) > 100:
        raise TrackingInvalid("A pool name is 1 to 100 characters", "券池名称须为 1 到 100 个字符")
    if kind not in KINDS:
        raise TrackingInvalid(
            f"Pool kind: one of {', '.join(KINDS)}", "券池类型须为 generate 或 import"
        )
    scope = TenantScope(tenant_id)
    exists = conn.execute(
        scope.select(coupon_pools, coupon_pools.c.id).where(coupon_pools.c.name == name)
    ).first()
    if exists is not None:
        raise CouponPoolExists(details={"name": name})
    return int(
        conn.execute(
            scope.insert(coupon_pools)
            .values(name=name, kind=kind, amount_fen=amount_fen, created_at=now)
            .returning(coupon_pools.c.id)
        ).scalar_one()
    )


def _pool_row(conn: Connection, scope: TenantScope, pool_id: int) -> Any:
    row = conn.execute(scope.select(coupon_pools).where(coupon_pools.c.id == pool_id)).first()
    if row is None:
        raise CouponPoolNotFound(details={"pool_id": pool_id})
    return row


def list_pools(conn: Connection, tenant_id: int) -> list[Pool]:
    scope = TenantScope(tenant_id)
    counts: dict[tuple[int, str], int] = {
        (r.pool_id, r.state): r.n
        for r in conn.execute(
            scope.select(
                coupons, coupons.c.pool_id, coupons.c.state, sa.func.count().label("n")
            ).group_by(coupons.c.pool_id, coupons.c.state)
        )
    }
    return [
        Pool(
            r.id,
            r.name,
            r.kind,
            r.amount_fen,
            counts.get((r.id, "available"), 0),
            counts.get((r.id, "issued"), 0),
            counts.get((r.id, "redeemed"), 0),
        )
        for r in conn.execute(scope.select(coupon_pools).order_by(coupon_pools.c.id))
    ]


def import_codes(
    conn: Connection, tenant_id: int, pool_id: int, raw_codes: Iterable[str]
) -> dict[str, int]:
    """Add the tenant's own codes to an ``import`` pool; a code the tenant has in any pool is a
    duplicate (codes are unique per tenant, so a redeemed code finds its one coupon)."""
    scope = TenantScope(tenant_id)
    pool = _pool_row(conn, scope, pool_id)
    if pool.kind != "import":
        raise TrackingInvalid(
            "Codes are imported into an 'import' pool", "只能向 import 类型的券池导入券码"
        )
    seen: set[str] = set()
    bad: list[str] = []
    for raw in raw_codes:
        code = codes.normalise_coupon(raw)
        if not code:
            continue
        if _CODE.fullmatch(code) is None:
            bad.append(raw[:40])
        else:
            seen.add(code)
    if bad:
        raise TrackingInvalid(
            "A coupon code is 4 to 32 letters and digits",
            "券码须为 4 到 32 位字母和数字",
            details={"invalid": bad[:20], "count": len(bad)},
        )
    ordered = sorted(seen)
    added = scope.insert_ignore(
        conn, coupons, [{"pool_id": pool_id, "code": c, "state": "available"} for c in ordered]
    )
    return {"received": len(ordered), "added": added, "duplicates": len(ordered) - added}


def issue(
    conn: Connection,
    tenant_id: int,
    pool_id: int,
    *,
    contact_ids: Sequence[int | None],
    now: datetime,
    expires_at: datetime | None,
    campaign_id: int | None = None,
    variant: str | None = None,
    journey_id: int | None = None,
) -> list[str]:
    """One coupon per recipient, in order; all or nothing. A coupon names a campaign or a
    journey (its step as ``variant``); the order that redeems it converts to that."""
    scope = TenantScope(tenant_id)
    pool = _pool_row(conn, scope, pool_id)
    n = len(contact_ids)
    if n == 0:
        return []
    if pool.kind == "generate":
        return _generate(
            conn, scope, pool_id, contact_ids, now, expires_at, campaign_id, variant, journey_id
        )
    with conn.begin_nested():
        # Lock the first n available codes (others issuing from the pool at once skip them),
        # then take exactly those: an ``IN (SELECT … LIMIT)`` inside the UPDATE may be
        # evaluated more than once by PostgreSQL and take more than n.
        picked = list(
            conn.execute(
                scope.select(coupons, coupons.c.id)
                .where(coupons.c.pool_id == pool_id, coupons.c.state == "available")
                .order_by(coupons.c.id)
                .limit(n)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if len(picked) < n:
            raise CouponPoolExhausted(
                details={"pool_id": pool_id, "needed": n, "available": len(picked)}
            )
        taken = conn.execute(
            scope.update(coupons)
            .where(coupons.c.id.in_(picked), coupons.c.state == "available")
            .values(
                state="issued",
                issued_at=now,
                expires_at=expires_at,
                campaign_id=campaign_id,
                variant=variant,
                journey_id=journey_id,
            )
            .returning(coupons.c.id, coupons.c.code)
        ).all()
        if len(taken) < n:  # SQLite has no row locks: another writer took some meanwhile
            raise CouponPoolExhausted(
                details={"pool_id": pool_id, "needed": n, "available": len(taken)}
            )
        taken = sorted(taken, key=lambda r: r.id)
        conn.execute(
            scope.update(coupons)
            .where(coupons.c.id == sa.bindparam("cid"))
            .values(contact_id=sa.bindparam("contact")),
            [{"cid": r.id, "contact": c} for r, c in zip(taken, contact_ids, strict=True)],
        )
    return [r.code for r in taken]


def _generate(
    conn: Connection,
    scope: TenantScope,
    pool_id: int,
    contact_ids: Sequence[int | None],
    now: datetime,
    expires_at: datetime | None,
    campaign_id: int | None,
    variant: str | None,
    journey_id: int | None,
) -> list[str]:

    def insert(code_list: list[str]) -> None:
        insert_rows(
            conn,
            scope,
            coupons,
            ("code", "contact_id"),
            zip(code_list, contact_ids, strict=True),
            {
                "pool_id": pool_id,
                "state": "issued",
                "campaign_id": campaign_id,
                "journey_id": journey_id,
                "variant": variant,
                "issued_at": now,
                "expires_at": expires_at,
            },
        )

    return codes.insert_unique(conn, len(contact_ids), codes.new_coupon_code, insert, "coupon")

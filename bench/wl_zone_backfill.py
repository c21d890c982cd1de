"""Time zone backfill: ``hongyan contacts zones`` over 200,000 contacts on PostgreSQL.

Seeded directly (``COPY``), as contacts stored before migration 0016 were (no zone):
``HONGYAN_BENCH_CONTACTS`` contacts (default 200,000), ``HONGYAN_BENCH_FOREIGN`` of them
(default 0.2) with foreign numbers: New York, Los Angeles, Tokyo, Berlin, Paris, and Moscow
mobiles (Russia spans zones: those stay without one), the rest Chinese.

**Ours**: :func:`hongyan.contacts.time_zones.backfill` in batches of 5,000, one transaction
each: the foreign contacts without a zone read by id after the last, each number decrypted and
its zone derived, one ``UPDATE`` per zone of the batch. Then a second run, which has nothing
left to fill (what a run on a finished tenant costs).

**Anchor**, measured in the same run: one ``UPDATE`` giving every foreign contact without a zone
a fixed zone (no decryption, no derivation: the least a set-based fill can cost), rolled back.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, datetime
from typing import Any

CONTACTS = int(os.environ.get("HONGYAN_BENCH_CONTACTS", "200000"))
FOREIGN = float(os.environ.get("HONGYAN_BENCH_FOREIGN", "0.2"))
NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
CHUNK = 50_000
# (prefix, country, digits that follow, first of them) of foreign mobile numbers
ABROAD = (
    ("+1212", "US", 7, 2_000_000),  # New York
    ("+1415", "US", 7, 2_000_000),  # Los Angeles
    ("+8190", "JP", 8, 10_000_000),  # Tokyo
    ("+491511", "DE", 7, 0),  # Berlin
    ("+336", "FR", 8, 0),  # Paris
    ("+7916", "RU", 7, 0),  # several zones
)


def _number(rng: random.Random, i: int) -> tuple[str, str]:
    if rng.random() < FOREIGN:
        prefix, country, digits, first = rng.choice(ABROAD)
        return f"{prefix}{first + i:0{digits}d}", country
    return f"+86138{i:08d}", "CN"


def seed(runtime: Any, tenant_id: int) -> dict[str, Any]:
    from hongyan.contacts.suppression import phone_context
    from hongyan.db import bulk
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import contacts
    from hongyan.security.keyring import mask_phone

    rng = random.Random(11)
    keyring, scope = runtime.keyring, TenantScope(tenant_id)
    pctx = phone_context(tenant_id)
    t0 = time.perf_counter()
    foreign = 0
    for start in range(0, CONTACTS, CHUNK):
        rows = []
        for i in range(start, min(CONTACTS, start + CHUNK)):
            phone, country = _number(rng, i)
            foreign += country != "CN"
            rows.append(
                (
                    keyring.blind_index(phone, pctx), keyring.encrypt(phone, pctx),
                    mask_phone(phone), country, "intl" if country != "CN" else "cmcc", False, {},
                    "import", NOW, NOW, None,
                )
            )  # fmt: skip
        with runtime.engine.begin() as conn:
            bulk.insert_rows(
                conn, scope, contacts,
                ("phone_index", "phone_cipher", "phone_masked", "country", "carrier", "mvno",
                 "attrs", "source", "created_at", "updated_at", "time_zone"),
                rows,
            )  # fmt: skip
    return {"seconds": round(time.perf_counter() - t0, 1), "foreign": foreign}


def run() -> dict[str, Any]:
    import sqlalchemy as sa

    from bench.wl_audience import _vacuum, pg_runtime
    from hongyan.contacts import time_zones
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import contacts
    from hongyan.tenants import service as tenants

    out: dict[str, Any] = {"contacts": CONTACTS, "foreign_share": FOREIGN}
    with pg_runtime() as pg:
        if pg is None:
            return {**out, "skipped": "no PostgreSQL"}
        runtime, url = pg
        clock = runtime.clock
        with runtime.engine.begin() as conn:
            tid = tenants.create_tenant(conn, clock, slug="bench", name="鸿雁茶饮").id
        out["seed"] = seed(runtime, tid)
        _vacuum(url)
        c = contacts.c
        with runtime.engine.connect() as conn:  # the anchor, rolled back
            t0 = time.perf_counter()
            conn.execute(
                TenantScope(tid)
                .update(contacts)
                .where(c.time_zone.is_(None), c.country != "CN")
                .values(time_zone="America/New_York")
            )
            anchor = time.perf_counter() - t0
            conn.rollback()
        t0 = time.perf_counter()
        first = time_zones.backfill(runtime.engine, clock, runtime.keyring, tid, actor="bench")
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = time_zones.backfill(runtime.engine, clock, runtime.keyring, tid, actor="bench")
        out["ours"] = {"seconds": round(ours, 2), **first.as_json()}
        out["again"] = {"seconds": round(time.perf_counter() - t0, 2), **again.as_json()}
        out["anchor"] = {"seconds": round(anchor, 2)}
        out["ratio"] = round(ours / anchor, 2) if anchor else None
        out["contacts_per_second"] = round(CONTACTS / ours)
        with runtime.engine.connect() as conn:
            out["zoned_after"] = int(
                conn.execute(
                    TenantScope(tid)
                    .select(contacts, sa.func.count())
                    .where(c.time_zone.is_not(None))
                ).scalar_one()
            )
    return out


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False, indent=2, default=str))

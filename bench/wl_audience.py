"""Audiences: 1,000,000 contacts and 10,000,000 orders on PostgreSQL.

1. **Load** every order (and a browse event for each customer who never bought) through the
   events path (``contacts.events.ingest``, batches of 5,000 per transaction: contacts made,
   events stored by ``COPY``, aggregates and interest tags upserted). The same orders are written
   to a Parquet file for the anchors. Orders come per block of 20,000 customers in time order.
   With ``HONGYAN_BENCH_LOAD=direct`` the same orders are aggregated here instead and the
   contacts (made by the events path's own contact writer), their aggregates and interest tags
   are written by ``COPY``: what the events path would leave, without its hour at a million.
2. **Recompute** RFM and lifecycle (``audience.recompute.recompute_scores``): the 12 cut points
   and the score sums from the buyers' indexes (buyers per order count; windows read at each
   cut's position of recency and monetary), one row written. Run twice (the first on a cold
   cache). Then, timed apart, the report the RFM page shows (``recompute.distribution``:
   contacts per group and per lifecycle stage, one pass over the aggregates, and a count of
   contacts).
3. **Preview** a four-condition segment (lifecycle, RFM group, orders, interest tag): the count
   and a masked sample of 20 (``audience.segments.preview``), cold and warm.

Anchors, measured in the same run on the same orders:

* **DuckDB** reading the Parquet file: per-customer aggregates, ``RANK()`` windows, the same
  quintile formula, means and groups, materialised as a table (a score per customer: more
  than our recompute keeps, the same answer). Also from a Parquet file of the
  per-customer aggregates (what our recompute starts from), for a like-for-like comparison.
* **pandas** the usual way: ``read_parquet``, ``groupby().agg()``, ``rank(method="min")``, the
  same formula with vectorised arithmetic.

Both anchors' scores are compared with ours customer by customer (they must be equal).
``HONGYAN_BENCH_CONTACTS`` sets the size (default 1,000,000; orders ≈ 10 per contact);
``HONGYAN_TEST_PG`` the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CONTACTS = int(os.environ.get("HONGYAN_BENCH_CONTACTS", "1000000"))
PG_URL = os.environ.get("HONGYAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
BLOCK = 20_000
BATCH = 5_000
LOAD = os.environ.get("HONGYAN_BENCH_LOAD", "events")  # or "direct"
TAGS = ("果茶", "奶茶", "咖啡", "甜品", "轻食")
SEGMENT = {
    "all": [
        {"field": "lifecycle", "op": "in", "value": ["active", "lapsing", "new"]},
        {"field": "rfm_group", "op": "in", "value": ["important_value", "important_keep"]},
        {"field": "orders_count", "op": "gte", "value": 5},
        {"field": "interest", "op": "has", "value": "果茶", "min_weight": 16},
    ]
}


def phone_of(i: int) -> int:
    return 13_800_000_000 + i


def orders(n: int, seed: int = 11) -> Iterator[list[tuple[int, int, datetime, int, str]]]:
    """Blocks of (contact, order no, time, amount in fen, tag), each in time order; one contact
    in ten never buys."""
    rng = random.Random(seed)
    for start in range(0, n, BLOCK):
        block = []
        for i in range(start, min(n, start + BLOCK)):
            if i % 10 == 0:
                continue
            favourite = TAGS[i % len(TAGS)]
            for k in range(1 + int(rng.expovariate(1 / 10.6))):
                at = NOW - timedelta(seconds=rng.randrange(730 * 86400))
                fen = int(rng.lognormvariate(9.5, 0.9)) // 10 * 10 + 990
                tag = favourite if rng.random() < 0.6 else rng.choice(TAGS)
                block.append((i, k, at, fen, tag))
        block.sort(key=lambda o: o[2])
        yield block


def _runtime(url: str) -> Any:
    from hongyan.clock import FixedClock
    from hongyan.db import migrate
    from hongyan.runtime import Runtime
    from hongyan.security.keyring import KeyRing
    from hongyan.settings import Settings

    settings = Settings(
        env="test",
        var_dir=Path(tempfile.gettempdir()) / "hongyan-bench-var",
        database_url=url,
        data_keys=f"k1:{KeyRing.generate_key()}",
        active_key="k1",
        index_key=KeyRing.generate_key(),
        session_secret="bench-" + uuid.uuid4().hex,
    )
    runtime = Runtime.create(settings, clock=FixedClock(NOW))
    migrate.upgrade(runtime.engine)
    return runtime


def load(runtime: Any, tenant_id: int, parquet: Path) -> dict[str, Any]:
    """Every order through the events path; the same orders into Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hongyan.contacts.events import Event, ingest

    schema = pa.schema(
        [("contact", pa.int64()), ("occurred_at", pa.timestamp("us", tz="UTC")),
         ("amount_fen", pa.int64())]
    )  # fmt: skip
    writer = pq.ParquetWriter(parquet, schema)
    stored = created = 0
    t0 = time.perf_counter()
    for block in orders(CONTACTS):
        writer.write_table(
            pa.table(
                {
                    "contact": [phone_of(o[0]) for o in block],
                    "occurred_at": [o[2] for o in block],
                    "amount_fen": [o[3] for o in block],
                },
                schema=schema,
            )
        )
        for start in range(0, len(block), BATCH):
            batch = [
                Event(f"o{i}-{k}", "order", f"+86{phone_of(i)}", at, order_id=f"{i}-{k}",
                      amount_fen=fen, tags=(tag,))
                for i, k, at, fen, tag in block[start : start + BATCH]
            ]  # fmt: skip
            with runtime.engine.begin() as conn:
                got = ingest(conn, runtime.clock, runtime.keyring, tenant_id, batch)
            stored += got.accepted
            created += got.contacts_created
    browsers = [
        Event(f"b{i}", "browse", f"+86{phone_of(i)}", NOW - timedelta(days=i % 400), tags=("甜品",))
        for i in range(0, CONTACTS, 10)
    ]
    for start in range(0, len(browsers), BATCH):
        with runtime.engine.begin() as conn:
            got = ingest(
                conn, runtime.clock, runtime.keyring, tenant_id, browsers[start : start + BATCH]
            )
        stored += got.accepted
        created += got.contacts_created
    writer.close()
    seconds = time.perf_counter() - t0
    return {
        "events": stored,
        "contacts": created,
        "seconds": round(seconds, 1),
        "events_per_s": round(stored / seconds),
    }


def load_direct(runtime: Any, tenant_id: int, parquet: Path) -> dict[str, Any]:
    """The same orders aggregated here; contacts made by the events path's contact writer,
    aggregates and interest tags written by COPY (what ``ingest`` would leave)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hongyan.contacts.events import INTEREST_WEIGHT, _contact_ids
    from hongyan.db.bulk import insert_rows
    from hongyan.db.scope import TenantScope
    from hongyan.db.tables import contact_activity, contact_interests

    schema = pa.schema(
        [("contact", pa.int64()), ("occurred_at", pa.timestamp("us", tz="UTC")),
         ("amount_fen", pa.int64())]
    )  # fmt: skip
    writer = pq.ParquetWriter(parquet, schema)
    scope = TenantScope(tenant_id)
    act_cols = ("contact_id", "first_order_at", "last_order_at", "orders_count", "revenue_fen",
                "last_browse_at", "last_interaction_at", "updated_at")  # fmt: skip
    int_cols = ("contact_id", "tag", "events", "weight", "first_at", "last_at")
    w_order, w_browse = INTEREST_WEIGHT["order"], INTEREST_WEIGHT["browse"]
    events = created = 0
    t0 = time.perf_counter()
    blocks = orders(CONTACTS)
    for start in range(0, CONTACTS, BLOCK):
        block = next(blocks)
        writer.write_table(
            pa.table(
                {
                    "contact": [phone_of(o[0]) for o in block],
                    "occurred_at": [o[2] for o in block],
                    "amount_fen": [o[3] for o in block],
                },
                schema=schema,
            )
        )
        span = range(start, min(CONTACTS, start + BLOCK))
        agg: dict[int, list[Any]] = {}
        tags: dict[tuple[int, str], list[Any]] = {}
        for i, _k, at, fen, tag in block:
            a = agg.get(i)
            if a is None:
                agg[i] = [at, at, 1, fen]
            else:
                a[0], a[1], a[2], a[3] = min(a[0], at), max(a[1], at), a[2] + 1, a[3] + fen
            t = tags.get((i, tag))
            if t is None:
                tags[(i, tag)] = [1, w_order, at, at]
            else:
                t[0], t[1], t[2], t[3] = t[0] + 1, t[1] + w_order, min(t[2], at), max(t[3], at)
        events += len(block)
        with runtime.engine.begin() as conn:
            ids, made = _contact_ids(
                conn, runtime.keyring, runtime.clock, tenant_id, [f"+86{phone_of(i)}" for i in span]
            )
            created += made
            act_rows, int_rows = [], []
            for i in span:
                cid = ids[f"+86{phone_of(i)}"]
                if i in agg:
                    first, last, n, fen = agg[i]
                    act_rows.append((cid, first, last, n, fen, None, last, NOW))
                else:  # one browse event (as load() sends)
                    seen = NOW - timedelta(days=i % 400)
                    act_rows.append((cid, None, None, 0, 0, seen, seen, NOW))
                    int_rows.append((cid, "甜品", 1, w_browse, seen, seen))
                    events += 1
            int_rows.extend((ids[f"+86{phone_of(i)}"], tag, *v) for (i, tag), v in tags.items())
            insert_rows(conn, scope, contact_activity, act_cols, act_rows)
            insert_rows(conn, scope, contact_interests, int_cols, int_rows)
    writer.close()
    seconds = time.perf_counter() - t0
    return {"mode": "direct (aggregates by COPY)", "events": events, "contacts": created,
            "seconds": round(seconds, 1)}  # fmt: skip


# -- the anchors -----------------------------------------------------------------------------------

DUCKDB_RFM = """
CREATE TABLE rfm AS
WITH agg AS ({source}),
ranked AS (
  SELECT contact,
         RANK() OVER (ORDER BY last_order_at) AS rr,
         RANK() OVER (ORDER BY orders_count) AS fr,
         RANK() OVER (ORDER BY revenue_fen) AS mr,
         COUNT(*) OVER () AS n
  FROM agg),
scored AS (
  SELECT contact, 1 + (5 * (rr - 1)) // n AS r, 1 + (5 * (fr - 1)) // n AS f,
         1 + (5 * (mr - 1)) // n AS m
  FROM ranked),
meaned AS (
  SELECT *, AVG(r) OVER () AS mr_, AVG(f) OVER () AS mf_, AVG(m) OVER () AS mm_ FROM scored)
SELECT contact, r, f, m,
       CASE WHEN m > mm_ THEN 'important_' ELSE 'general_' END ||
       CASE WHEN r > mr_ AND f > mf_ THEN 'value' WHEN r > mr_ THEN 'develop'
            WHEN f > mf_ THEN 'keep' ELSE 'retain' END AS grp
FROM meaned
"""
FROM_ORDERS = (
    "SELECT contact, max(occurred_at) AS last_order_at, count(*) AS orders_count, "
    "sum(amount_fen) AS revenue_fen FROM read_parquet('{path}') GROUP BY contact"
)
FROM_AGGREGATES = "SELECT * FROM read_parquet('{path}')"


def duckdb_rfm(source_sql: str) -> tuple[float, dict[int, tuple[int, int, int, str]]]:
    import duckdb

    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(DUCKDB_RFM.format(source=source_sql))
    seconds = time.perf_counter() - t0
    rows = con.execute("SELECT contact, r, f, m, grp FROM rfm").fetchall()
    con.close()
    return seconds, {int(c): (int(r), int(f), int(m), g) for c, r, f, m, g in rows}


def pandas_rfm(parquet: Path) -> tuple[float, dict[int, tuple[int, int, int, str]]]:
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    frame = pd.read_parquet(parquet)
    agg = frame.groupby("contact").agg(
        last_order_at=("occurred_at", "max"),
        orders_count=("occurred_at", "size"),
        revenue_fen=("amount_fen", "sum"),
    )
    n = len(agg)
    scores = {}
    for dim, col in (("r", "last_order_at"), ("f", "orders_count"), ("m", "revenue_fen")):
        rank = agg[col].rank(method="min").astype("int64")
        scores[dim] = 1 + (5 * (rank - 1)) // n
    out = pd.DataFrame(scores)
    hr, hf, hm = (out[d] > out[d].mean() for d in "rfm")
    kind = np.select([hr & hf, hr, hf], ["value", "develop", "keep"], "retain")
    out["grp"] = np.where(hm, "important_", "general_") + kind
    seconds = time.perf_counter() - t0
    return seconds, {
        int(c): (int(r), int(f), int(m), g)
        for c, r, f, m, g in zip(out.index, out.r, out.f, out.m, out.grp, strict=True)
    }


def ours_by_phone(runtime: Any, tenant_id: int) -> dict[int, tuple[int, int, int, str]]:
    import sqlalchemy as sa

    from hongyan.audience import scoring, service
    from hongyan.contacts.suppression import phone_context
    from hongyan.db.tables import contact_activity, contacts

    ctx = phone_context(tenant_id)
    by_index = {
        runtime.keyring.blind_index(f"+86{phone_of(i)}", ctx): phone_of(i)
        for i in range(CONTACTS)
        if i % 10
    }
    a = contact_activity
    with runtime.engine.connect() as conn:
        cuts = service.get_cuts(conn, tenant_id)
        splits = service.get_settings(conn, tenant_id).splits
        rows = conn.execute(
            sa.select(contacts.c.phone_index, scoring.score_sql(a, "r", cuts),
                      scoring.score_sql(a, "f", cuts), scoring.score_sql(a, "m", cuts),
                      scoring.group_sql(a, cuts, splits))
            .select_from(contacts.join(a, a.c.contact_id == contacts.c.id))
            .where(contacts.c.tenant_id == tenant_id, a.c.tenant_id == tenant_id,
                   scoring.buyer_sql(a))
            .execution_options(hongyan_tenant=tenant_id, yield_per=50_000)
        )  # fmt: skip
        return {by_index[bytes(r[0])]: (r[1], r[2], r[3], r[4]) for r in rows}


def aggregates_parquet(runtime: Any, tenant_id: int, path: Path) -> None:
    """Our per-contact aggregates of the buyers, keyed like the orders file (for DuckDB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from hongyan.contacts.suppression import phone_context
    from hongyan.db.tables import contact_activity, contacts

    ctx = phone_context(tenant_id)
    by_index = {
        runtime.keyring.blind_index(f"+86{phone_of(i)}", ctx): phone_of(i) for i in range(CONTACTS)
    }
    a = contact_activity.c
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            sa.select(contacts.c.phone_index, a.last_order_at, a.orders_count, a.revenue_fen)
            .select_from(contacts.join(contact_activity, a.contact_id == contacts.c.id))
            .where(contacts.c.tenant_id == tenant_id, a.tenant_id == tenant_id, a.orders_count > 0)
            .execution_options(hongyan_tenant=tenant_id)
        ).all()
    pq.write_table(
        pa.table(
            {
                "contact": [by_index[bytes(r[0])] for r in rows],
                "last_order_at": [r[1] for r in rows],
                "orders_count": [r[2] for r in rows],
                "revenue_fen": [r[3] for r in rows],
            }
        ),
        path,
    )


def _agree(ours: dict[int, Any], theirs: dict[int, Any]) -> dict[str, int]:
    differ = sum(1 for k, v in ours.items() if theirs.get(k) != v)
    return {"compared": len(ours), "differ": differ, "missing": len(set(theirs) - set(ours))}


# -- run -------------------------------------------------------------------------------------------


def _pg() -> tuple[str, Any] | None:
    """A fresh database on the benchmark server and its admin engine (None: no server)."""
    from bench.wl_contacts_import import _fresh_pg, _pg_database

    found = _pg_database()
    if found is None:
        return None
    _base, admin = found
    return _fresh_pg(admin), admin


@contextlib.contextmanager
def pg_runtime() -> Iterator[tuple[Any, str] | None]:
    """A runtime on a fresh, migrated database of the benchmark server, and its URL; the
    database is dropped afterwards. None when no server answers."""
    from bench.wl_contacts_import import _drop_pg

    pg = _pg()
    if pg is None:
        yield None
        return
    url, admin = pg
    runtime = _runtime(url)
    try:
        yield runtime, url
    finally:
        runtime.close()
        _drop_pg(admin, url)
        admin.dispose()


def run() -> dict[str, Any]:

    from hongyan.audience import recompute, segments
    from hongyan.tenants import service as tenants

    out: dict[str, Any] = {"contacts": CONTACTS}
    with pg_runtime() as pg:
        if pg is None:
            return {**out, "skipped": f"no PostgreSQL at {PG_URL}"}
        runtime, url = pg
        with tempfile.TemporaryDirectory() as tmp:
            parquet = Path(tmp) / "orders.parquet"
            with runtime.engine.begin() as conn:
                tid = tenants.create_tenant(conn, runtime.clock, slug="bench", name="bench").id
            loader = load_direct if LOAD == "direct" else load
            out["load"] = loader(runtime, tid, parquet)
            _vacuum(url)

            t0 = time.perf_counter()
            with runtime.engine.begin() as conn:
                figures = recompute.recompute_scores(conn, runtime.clock, tid)
            first_s = time.perf_counter() - t0
            # the daily run (the same work again, warm)
            t0 = time.perf_counter()
            with runtime.engine.begin() as conn:
                recompute.recompute_scores(conn, runtime.clock, tid)
            ours_s = time.perf_counter() - t0
            figures.pop("seconds")  # timed here, around the transaction
            # the report of the run (contacts per group and per stage), computed when asked for
            t0 = time.perf_counter()
            with runtime.engine.connect() as conn:
                report = recompute.distribution(conn, tid)
            report_s = time.perf_counter() - t0
            out["recompute"] = {
                "first_seconds": round(first_s, 2),
                "seconds": round(ours_s, 2),
                **figures,
                "report_seconds": round(report_s, 2),
                "report": report,
            }

            times = []
            for _ in range(6):
                t0 = time.perf_counter()
                with runtime.engine.connect() as conn:
                    got = segments.preview(conn, runtime.clock, tid, SEGMENT, sample=20)
                times.append(time.perf_counter() - t0)
            out["preview"] = {
                "rule": SEGMENT,
                "count": got["count"],
                "first_seconds": round(times[0], 3),
                "warm_median_seconds": round(statistics.median(times[1:]), 3),
                "warm_max_seconds": round(max(times[1:]), 3),
            }

            ours = ours_by_phone(runtime, tid)
            duck_s, duck = duckdb_rfm(FROM_ORDERS.format(path=parquet))
            agg_path = Path(tmp) / "aggregates.parquet"
            aggregates_parquet(runtime, tid, agg_path)
            duck_agg_s, duck_agg = duckdb_rfm(FROM_AGGREGATES.format(path=agg_path))
            pandas_s, pandas = pandas_rfm(parquet)
            out["duckdb_from_orders"] = {"seconds": round(duck_s, 2), **_agree(ours, duck)}
            out["duckdb_from_aggregates"] = {
                "seconds": round(duck_agg_s, 2),
                **_agree(ours, duck_agg),
            }
            out["pandas"] = {"seconds": round(pandas_s, 2), **_agree(ours, pandas)}
            out["ratios"] = {
                "first_recompute_vs_duckdb_from_orders": round(first_s / duck_s, 2),
                "recompute_vs_duckdb_from_orders": round(ours_s / duck_s, 2),
                "recompute_vs_duckdb_from_aggregates": round(ours_s / duck_agg_s, 2),
                "pandas_vs_recompute": round(pandas_s / ours_s, 2),
            }
            out["orders_parquet_mb"] = round(parquet.stat().st_size / 1e6, 1)
    out["goal"] = (
        "recompute within 1.5x of DuckDB, at least 10x faster than pandas; "
        "a segment preview under 1 s on PostgreSQL"
    )
    return out


def _vacuum(url: str) -> None:
    """Fresh statistics for the planner, as autovacuum would give a settled database."""
    import psycopg

    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as c:
        c.execute("VACUUM ANALYZE")


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False, indent=2, default=str))

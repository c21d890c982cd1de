"""The tenant guard's cost: scoped executemany inserts against the same inserts unguarded.

Anchor: a plain SQLAlchemy engine (no guard hook) running the same executemany of the same rows
into the same schema on SQLite, in the same run.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.engine import make_engine
from hongyan.db.scope import TenantScope
from hongyan.db.tables import audit_log, tenants

N = 100_000
BATCH = 5_000


def _rows(now: datetime) -> list[dict[str, Any]]:
    return [
        {"actor": "bench", "action": "row", "target": str(i), "detail": {}, "at": now}
        for i in range(N)
    ]


def run() -> dict[str, Any]:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        guarded = make_engine(f"sqlite:///{Path(tmp) / 'g.db'}")
        migrate.upgrade(guarded)
        with guarded.begin() as conn:
            conn.execute(sa.insert(tenants).values(slug="b", name="b", created_at=now))
        rows = _rows(now)
        scope = TenantScope(1)
        t0 = time.perf_counter()
        for i in range(0, N, BATCH):
            with guarded.begin() as conn:
                scope.insert_many(conn, audit_log, rows[i : i + BATCH])
        ours = time.perf_counter() - t0

        plain = sa.create_engine(f"sqlite:///{Path(tmp) / 'p.db'}")
        audit_log.metadata.create_all(plain)
        with plain.begin() as conn:
            conn.execute(sa.insert(tenants).values(slug="b", name="b", created_at=now))
        plain_rows = [{**r, "tenant_id": 1} for r in rows]
        t0 = time.perf_counter()
        for i in range(0, N, BATCH):
            with plain.begin() as conn:
                conn.execute(sa.insert(audit_log), plain_rows[i : i + BATCH])
        anchor = time.perf_counter() - t0
        guarded.dispose()
        plain.dispose()
    return {
        "rows": N,
        "anchor_unguarded_rows_per_s": round(N / anchor),
        "scoped_rows_per_s": round(N / ours),
        "ratio_to_anchor": round(anchor / ours, 3),
    }

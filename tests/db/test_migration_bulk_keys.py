"""Migration 0019 (the bulk tables lose their tenant keys) rebuilds tables on SQLite: the rows
of the tables that reference them must survive (a DROP TABLE with foreign keys enforced would
have cascaded into them)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.scope import unscoped
from hongyan.runtime import Runtime
from hongyan.tenants import service

CHILDREN = ("contact_tags", "contact_events", "contact_activity", "message_parts", "coupons")


def _insert(conn: sa.Connection, table: sa.Table, row: dict[str, object]) -> int:
    stmt = sa.insert(table).values(row).returning(table.c[next(iter(table.primary_key)).name])
    return int(conn.execute(unscoped(stmt, "test set-up")).scalar_one())


def test_rebuilt_tables_keep_the_rows_that_reference_them(bare_runtime: Runtime) -> None:
    engine, now = bare_runtime.engine, bare_runtime.clock.now()
    migrate.upgrade(engine, "0018")
    with engine.begin() as conn:
        tid = service.create_tenant(conn, bare_runtime.clock, slug="tea", name="Tea").id
        meta = sa.MetaData()
        t = {
            name: sa.Table(name, meta, autoload_with=conn)
            for name in ("contacts", "messages", "coupon_pools", "audiences", *CHILDREN)
        }
        cid = _insert(conn, t["contacts"], {
            "tenant_id": tid, "phone_index": b"\x01" * 32, "phone_cipher": b"x",
            "phone_masked": "138****0000", "country": "CN", "carrier": "cmcc", "attrs": "{}",
            "source": "import", "created_at": now, "updated_at": now,
        })  # fmt: skip
        conn.execute(unscoped(sa.insert(t["contact_tags"]).values(
            tenant_id=tid, contact_id=cid, tag="茶", created_at=now), "test set-up"))  # fmt: skip
        _insert(conn, t["contact_events"], {
            "tenant_id": tid, "contact_id": cid, "event_id": "o1", "kind": "order",
            "occurred_at": now, "received_at": now, "amount_fen": 100, "tags": "[]",
            "properties": "{}",
        })  # fmt: skip
        conn.execute(unscoped(sa.insert(t["contact_activity"]).values(
            tenant_id=tid, contact_id=cid, orders_count=1, revenue_fen=100,
            last_order_at=now, first_order_at=now, updated_at=now), "test set-up"))  # fmt: skip
        mid = _insert(conn, t["messages"], {
            "tenant_id": tid, "lane": 2, "category": "marketing", "source": "campaign",
            "dest_cipher": b"x", "dest_index": bytes(32), "dest_masked": "138****0000",
            "body": "hi", "encoding": "gsm7", "parts": 1, "state": "submitted", "due_at": now,
            "expires_at": now + timedelta(days=1), "created_at": now, "contact_id": cid,
        })  # fmt: skip
        conn.execute(unscoped(sa.insert(t["message_parts"]).values(
            tenant_id=tid, message_id=mid, part_no=1, channel="sandbox", carrier_id="c1",
            submitted_at=now),
            "test set-up"))  # fmt: skip
        pool = _insert(conn, t["coupon_pools"], {
            "tenant_id": tid, "name": "p", "kind": "generate", "created_at": now,
        })  # fmt: skip
        _insert(conn, t["coupons"], {
            "tenant_id": tid, "pool_id": pool, "code": "ABCD2345", "state": "available",
        })  # fmt: skip

    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                name: int(conn.execute(unscoped(
                    sa.select(sa.func.count()).select_from(sa.table(name)), "test count"
                )).scalar_one())
                for name in ("contacts", "messages", *CHILDREN)
            }  # fmt: skip

    before = counts()
    assert set(before.values()) == {1}
    migrate.upgrade(engine)
    assert counts() == before
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":  # and the keys are enforced again afterwards
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1

"""The engine's transaction options: planner settings for index-only work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hongyan.channels.base import Report
from hongyan.db.engine import INDEX_PLANS
from hongyan.db.scope import TenantScope
from hongyan.db.tables import message_parts, messages
from hongyan.dispatch import outbox, receipts
from hongyan.runtime import Runtime
from hongyan.tenants import service


def _settings(conn: sa.Connection) -> tuple[str, ...]:
    names = ("enable_seqscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin", "jit")
    return tuple(conn.exec_driver_sql(f"SHOW {n}").scalar_one() for n in names)


def test_index_plans_last_for_the_transaction_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("planner settings are PostgreSQL's")
    with runtime.engine.connect() as conn:
        conn.execution_options(**{INDEX_PLANS: True})
        with conn.begin():
            assert _settings(conn) == ("off",) * 5
    with runtime.engine.connect() as conn, conn.begin():
        assert "on" in _settings(conn)


def _fill(runtime: Runtime, n: int) -> int:
    """``n`` messages, half submitted, half planned, one part each, and no planner statistics."""
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        tenant = service.create_tenant(conn, runtime.clock, slug="plans", name="plans").id
        scope = TenantScope(tenant)
        rows = [
            {
                "lane": 2,
                "category": "marketing",
                "source": "test",
                "dest_cipher": b"x",
                "dest_index": i.to_bytes(32, "big"),
                "dest_masked": "138****0000",
                "body": "hi",
                "encoding": "gsm7",
                "parts": 1,
                "state": "submitted" if i % 2 else "planned",
                "due_at": now,
                "expires_at": now + timedelta(hours=1),
                "created_at": now,
            }
            for i in range(n)
        ]
        scope.insert_many(conn, messages, rows)
        ids = conn.execute(scope.select(messages, messages.c.id)).scalars().all()
        scope.insert_many(
            conn,
            message_parts,
            [
                {
                    "message_id": mid,
                    "part_no": 1,
                    "channel": "c",
                    "carrier_id": f"{mid:x}",
                    "submitted_at": now,
                }
                for mid in ids
            ],
        )
    return tenant


def _statements(runtime: Runtime, work: Callable[[sa.Connection], object]) -> list[Any]:
    """What ``work`` sends to the server, run in an INDEX_PLANS transaction, then rolled back."""
    sent: list[Any] = []

    def listen(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if not statement.startswith("SELECT set_config"):
            sent.append((statement, params))

    sa.event.listen(runtime.engine, "before_cursor_execute", listen)
    try:
        with runtime.engine.connect() as conn:
            conn.execution_options(**{INDEX_PLANS: True})
            with conn.begin() as trans:
                work(conn)
                trans.rollback()
    finally:
        sa.event.remove(runtime.engine, "before_cursor_execute", listen)
    return sent


def test_dispatcher_statements_run_on_indexes_without_statistics(runtime: Runtime) -> None:
    """Receipts stored, messages settled, a batch claimed and the unreceipted swept, on tables
    the planner knows nothing about: every statement plans as index lookups under INDEX_PLANS,
    so its cost is the batch's, not the table's."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("planner settings are PostgreSQL's")
    _fill(runtime, 3000)
    clock = runtime.clock
    reports = [Report(f"{i:x}", "DELIVRD", "000", None, "") for i in range(1, 400)]
    sent = _statements(runtime, lambda conn: receipts.apply_reports(conn, clock, "c", reports))
    sent += _statements(
        runtime,
        lambda conn: outbox.claim(conn, clock, owner="t", limit=200, lease=timedelta(seconds=60)),
    )
    sent += _statements(
        runtime, lambda conn: receipts.expire_unreceipted(conn, clock, grace=timedelta(0))
    )
    kinds = " ".join(statement.split(None, 1)[0] for statement, _ in sent)
    assert kinds.count("SELECT") >= 2 and kinds.count("UPDATE") >= 3, kinds
    with runtime.engine.connect() as conn:
        conn.execution_options(**{INDEX_PLANS: True})
        with conn.begin():
            for statement, params in sent:
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
                assert "Seq Scan" not in plan, (statement, plan)
                assert "Bitmap" not in plan, (statement, plan)
                assert "Hash Join" not in plan and "Merge Join" not in plan, (statement, plan)


def test_json_is_stored_readably(runtime: Runtime) -> None:
    """A JSON column keeps non-ASCII keys and values as written (no \\u escapes), on both
    databases, and reads back the same; SQLite's JSON path finds the key by its own spelling."""
    from hongyan.db.tables import segments

    rule = {"field": "attr.等级", "op": "eq", "value": "金卡会员", "等级": "金卡"}
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        tid = service.create_tenant(conn, runtime.clock, slug="json", name="鸿雁").id
        scope = TenantScope(tid)
        conn.execute(
            scope.insert(segments).values(
                name="金卡", rule=rule, created_by="test", created_at=now, updated_at=now
            )
        )
        raw = conn.execute(scope.select(segments, sa.cast(segments.c.rule, sa.Text))).scalar_one()
        assert "等级" in raw and "金卡会员" in raw and "\\u" not in raw
        assert conn.execute(scope.select(segments, segments.c.rule)).scalar_one() == rule
        if runtime.engine.dialect.name == "sqlite":
            found = sa.func.json_extract(segments.c.rule, '$."等级"')
        else:
            found = segments.c.rule.op("->>")(sa.literal("等级", sa.String))
        assert conn.execute(scope.select(segments, found)).scalar_one() == "金卡"

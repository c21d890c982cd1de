"""A drawn code that is already stored is never issued twice: the batch is drawn again, and
nothing of the refused batch stays (both databases)."""

from __future__ import annotations

import sqlalchemy as sa

from hongyan.runtime import Runtime
from hongyan.tracking import codes


def test_a_colliding_batch_is_drawn_again(runtime: Runtime) -> None:
    meta = sa.MetaData()
    table = sa.Table("code_probe", meta, sa.Column("code", sa.String(16), primary_key=True))
    draws = iter(["TAKEN", "FRESH1", "FRESH2", "FRESH3"])
    tries: list[list[str]] = []

    def insert(batch: list[str]) -> None:
        tries.append(sorted(batch))
        conn.execute(table.insert(), [{"code": c} for c in batch])

    with runtime.engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(table.insert(), [{"code": "TAKEN"}])
        got = codes.insert_unique(conn, 2, lambda: next(draws), insert, "probe")
        stored = sorted(conn.execute(sa.select(table.c.code)).scalars())
        meta.drop_all(conn)
    assert tries == [["FRESH1", "TAKEN"], ["FRESH2", "FRESH3"]]
    assert sorted(got) == ["FRESH2", "FRESH3"]
    # FRESH1 went with the refused batch: rolled back to the savepoint, not left behind.
    assert stored == ["FRESH2", "FRESH3", "TAKEN"]

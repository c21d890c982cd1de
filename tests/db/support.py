"""What a database holds, to compare before and after a request that must change nothing."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hongyan.db.tables import metadata


def snapshot(engine: Engine, volatile: Iterable[str] = ()) -> dict[str, tuple[int, str]]:
    """Every table's row count and a digest of its rows in primary-key order, but for the
    ``volatile`` columns (``table.column``: bookkeeping a read may touch, such as a key's last
    use). Two snapshots are equal only if no row was added, removed or changed."""
    out: dict[str, tuple[int, str]] = {}
    with engine.connect() as conn:
        for name, sql in _queries(engine.dialect, tuple(sorted(volatile))):
            digest = hashlib.sha256()
            count = 0
            for row in conn.exec_driver_sql(sql):
                digest.update(repr(tuple(row)).encode())
                count += 1
            out[name] = (count, digest.hexdigest()[:16])
    return out


@functools.cache
def _queries(dialect: sa.Dialect, volatile: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each table's query, compiled once (a fuzz takes two snapshots a request)."""
    out = []
    for table in metadata.sorted_tables:
        columns = [c for c in table.columns if f"{table.name}.{c.name}" not in volatile]
        order = list(table.primary_key.columns) or columns
        query = sa.select(*columns).order_by(*order)
        out.append((table.name, str(query.compile(dialect=dialect))))
    return out


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    """The tables whose rows differ, with their row counts before and after."""
    return [
        f"{name} ({before[name][0]} -> {after[name][0]} rows)"
        for name in before
        if before[name] != after[name]
    ]

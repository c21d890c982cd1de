"""Engines for the embedded default (SQLite) and production (PostgreSQL)."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hongyan.db.scope import install_guard


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (or none)."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Take transactions out of the sqlite3 module's hands: in its legacy mode it sends no BEGIN
    # before SAVEPOINT, so releasing a savepoint would commit the whole transaction. SQLAlchemy's
    # documented pysqlite recipe: autocommit at the driver, BEGIN emitted by the "begin" event.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


#: Execution option of a connection whose transactions will write (see :func:`_sqlite_begin`).
BEGIN_IMMEDIATE = "hongyan_begin_immediate"


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writer may ask for BEGIN IMMEDIATE: it then waits for the write lock (busy_timeout) at
    # its start, instead of failing with "database is locked" at its first write when another
    # writer committed after its first read. PostgreSQL needs nothing of the kind.
    immediate = conn.get_execution_options().get(BEGIN_IMMEDIATE)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: Execution option of a connection whose statements are all meant to run on an index, whatever
#: the planner's statistics say (see :func:`_index_plans`).
INDEX_PLANS = "hongyan_index_plans"

# Each setting lasts until the end of the transaction (set_config's third argument).
_INDEX_PLANS_SQL = "SELECT " + ", ".join(
    f"set_config('{name}', 'off', true)"
    for name in (
        "enable_seqscan",
        "enable_bitmapscan",
        "enable_hashjoin",
        "enable_mergejoin",
        "jit",
    )
)


def _index_plans(conn: sa.Connection) -> None:
    """PostgreSQL: a transaction asked to run on indexes only gets planner settings that say so.

    The dispatcher's statements each touch a few hundred rows by an index (a claim in due order,
    parts and messages by id, receipts by carrier id). The planner only knows that when the
    table's statistics are fresh, and they are not right after a campaign planned a million
    messages (autovacuum analyses a minute later at best, never where it is off): then it scans
    and hashes the whole table for every batch, and a dispatcher's cost grows with the table.
    Forbidding sequential and bitmap scans, hash and merge joins for these transactions leaves
    ordered index scans and nested loops over index lookups, so every batch costs what its own
    rows cost; JIT is off because a forbidden plan's inflated cost would otherwise trigger
    compiling.
    """
    if conn.get_execution_options().get(INDEX_PLANS):
        conn.exec_driver_sql(_INDEX_PLANS_SQL)


def _begin_writes(engine: Engine) -> None:
    """On SQLite, ``engine.begin()`` (a transaction that means to write) begins IMMEDIATE.

    A deferred transaction that reads, then writes after another writer committed, fails at once
    with "database is locked" (busy_timeout cannot help: its snapshot is stale). Every
    ``engine.begin()`` in the code base is such a unit of work (a request, a CLI command, a
    dispatcher step), so it takes the write lock up front and waits its turn; ``engine.connect()``
    reads stay deferred and never wait for writers (WAL).
    """

    @contextlib.contextmanager
    def begin() -> Iterator[sa.Connection]:
        with engine.connect() as conn:
            conn.execution_options(**{BEGIN_IMMEDIATE: True})
            with conn.begin():
                yield conn

    engine.begin = begin  # type: ignore[method-assign]


_json_dumps = functools.partial(json.dumps, ensure_ascii=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the tenant guard; bound parameters never appear in error messages."""
    url = normalise_url(url)
    kwargs.setdefault("hide_parameters", True)
    # JSON columns store non-ASCII keys and values as written ("等级", not "\\u7b49\\u7ea7"), as
    # the COPY path (db/bulk.py) already does: readable in the database, and one spelling of a
    # key for SQLite's JSON paths to match.
    kwargs.setdefault("json_serializer", _json_dumps)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        _begin_writes(engine)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "begin", _index_plans)
    install_guard(engine)
    return engine

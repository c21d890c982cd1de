"""Which database errors a transaction is run again after, and the retry loop itself, with the
errors raised for real by SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from hongyan.db.retry import is_transient, retrying
from hongyan.runtime import Runtime


def _sqlite_locked(tmp_path: Path) -> sa.exc.DBAPIError:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    raise AssertionError("the write lock did not stop the second writer")


def test_a_locked_sqlite_database_is_transient(tmp_path: Path) -> None:
    exc = _sqlite_locked(tmp_path)
    assert "locked" in str(exc.orig)
    assert is_transient(exc)


def test_errors_of_the_statement_itself_are_not(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError) as bad_sql:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        assert not is_transient(bad_sql.value)
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE once (x INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO once VALUES (1)"))
    with pytest.raises(sa.exc.IntegrityError) as dup, runtime.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO once VALUES (1)"))
    assert not is_transient(dup.value)
    assert not is_transient(ValueError("not a database error"))


def test_a_real_postgresql_deadlock_is_transient_and_run_again(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("deadlock detection is PostgreSQL's")
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pair (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(sa.text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2)
    runs: list[str] = []
    errors: list[BaseException] = []

    def worker(first: int, second: int) -> None:
        def tx() -> None:
            runs.append(f"{first}->{second}")
            with runtime.engine.begin() as conn:
                conn.execute(sa.text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": first})
                if len(runs) <= 2:  # only the first attempts cross each other
                    both_hold_one.wait(10)
                conn.execute(sa.text("UPDATE pair SET n = n + 1 WHERE id = :i"), {"i": second})

        try:
            retrying(tx, what="crossing updates")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # One of the two was chosen as the deadlock's victim and ran a second time.
    assert len(runs) == 3
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM pair ORDER BY id")).scalars().all() == [2, 2]


def test_retrying_gives_up_after_its_budget(tmp_path: Path) -> None:
    exc = _sqlite_locked(tmp_path)
    calls: list[float] = []
    slept: list[float] = []

    def always_locked() -> None:
        calls.append(1)
        raise exc

    with pytest.raises(sa.exc.DBAPIError):
        retrying(always_locked, budget=0.5, first_delay=0.1, sleep=slept.append)
    # Not a busy loop, not forever: a few tries with growing pauses.
    assert 2 <= len(calls) <= 4
    assert all(b > a * 0.5 for a, b in itertools.pairwise(slept))


def test_a_permanent_error_is_raised_at_once() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise sa.exc.ProgrammingError("SELECT", {}, Exception("syntax error"))

    with pytest.raises(sa.exc.ProgrammingError):
        retrying(broken, sleep=lambda s: None)
    assert calls == [1]

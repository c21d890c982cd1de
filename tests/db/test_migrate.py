"""Migrations: the schema comes from Alembic, SQLite runs in WAL with foreign keys on."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.tables import metadata
from hongyan.runtime import Runtime
from hongyan.tenants import service


def test_upgrade_creates_every_table_and_is_idempotent(bare_runtime: Runtime) -> None:
    assert migrate.current_revision(bare_runtime.engine) is None
    assert migrate.upgrade(bare_runtime.engine) == migrate.head_revision()
    assert migrate.upgrade(bare_runtime.engine) == migrate.head_revision()
    names = set(sa.inspect(bare_runtime.engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names


def test_migrations_match_the_tables(runtime: Runtime) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with runtime.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"tables.py and the migrations differ: {diff}"


@pytest.mark.sqlite_only
def test_sqlite_pragmas(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_failed_transaction_leaves_nothing(runtime: Runtime) -> None:
    """Savepoints inside a transaction must not commit it (SQLite's driver did, by default)."""

    class Boom(Exception):
        pass

    with pytest.raises(Boom), runtime.engine.begin() as conn:
        service.create_tenant(conn, runtime.clock, slug="half", name="H", signature="【半成品】")
        raise Boom
    with runtime.engine.connect() as conn:
        assert service.list_tenants(conn) == []

"""Driver-level bulk inserts and lookups: the tenant is forced, values read back as SQLAlchemy
wrote them, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hongyan.db import bulk
from hongyan.db.scope import TenantScope, TenantScopeViolation
from hongyan.db.tables import audit_log, channels, contact_fields
from hongyan.runtime import Runtime
from hongyan.tenants import service


def test_insert_rows_and_fetch_in(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        a = service.create_tenant(conn, runtime.clock, slug="aaa", name="A").id
        b = service.create_tenant(conn, runtime.clock, slug="bbb", name="B").id
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        n = bulk.insert_rows(
            conn,
            TenantScope(a),
            contact_fields,
            ("name", "type"),
            [("积分", "number"), ("等级", "text")],
            {"label": "", "created_at": now, "updated_at": now},
        )
        assert n == 2
        bulk.insert_rows(
            conn, TenantScope(a), audit_log, ("actor", "action", "detail"),
            [("t", "x", {"k": [1, "二"]})], {"at": now},
        )  # fmt: skip
        # The same rows through SQLAlchemy, for tenant b: both must read back alike.
        conn.execute(
            TenantScope(b).insert(contact_fields),
            [{"name": "积分", "type": "number", "label": "", "created_at": now, "updated_at": now}],
        )
    with runtime.engine.connect() as conn:
        rows = bulk.fetch_in(
            conn, TenantScope(a), contact_fields, ("name", "type"), "name", ["积分", "无"]
        )
        assert rows == [("积分", "number")]
        assert bulk.fetch_in(conn, TenantScope(a), audit_log, ("detail",), "actor", ["t"]) == [
            ({"k": [1, "二"]},)
        ]
        stamps = conn.execute(
            sa.select(contact_fields.c.tenant_id, contact_fields.c.created_at)
            .where(contact_fields.c.name == "积分")
            .execution_options(hongyan_unscoped="test reads both tenants")
        ).all()
        assert {s.created_at for s in stamps} == {now}
        later = conn.execute(
            TenantScope(a)
            .select(contact_fields, sa.func.count())
            .where(contact_fields.c.created_at >= now)  # compared in SQL, as text on SQLite
        ).scalar_one()
        assert later == 2
        assert (
            bulk.fetch_in(conn, TenantScope(b), contact_fields, ("name",), "name", ["等级"]) == []
        )


def test_the_tenant_is_forced(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        a = service.create_tenant(conn, runtime.clock, slug="aaa", name="A").id
        with pytest.raises(TenantScopeViolation):
            bulk.insert_rows(conn, TenantScope(a), contact_fields, ("tenant_id", "name"), [])
        with pytest.raises(TenantScopeViolation):
            bulk.insert_rows(conn, TenantScope(a), channels, ("name",), [])
        with pytest.raises(TenantScopeViolation):
            bulk.fetch_in(conn, TenantScope(a), channels, ("name",), "name", ["x"])

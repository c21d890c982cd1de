"""The tenant guard: a statement on tenant data without a scope never reaches the database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from hongyan.db.scope import TenantScope, TenantScopeViolation, unscoped
from hongyan.db.tables import metadata, tenants, users
from hongyan.runtime import Runtime
from hongyan.tenants import service

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _two_tenants(runtime: Runtime) -> tuple[int, int]:
    with runtime.engine.begin() as conn:
        a = service.create_tenant(conn, runtime.clock, slug="tea-a", name="A")
        b = service.create_tenant(conn, runtime.clock, slug="tea-b", name="B")
        for t in (a, b):
            service.create_user(
                conn,
                runtime.clock,
                runtime.keyring,
                tenant_id=t.id,
                email=f"o@{t.slug}.cn",
                name="o",
                role="owner",
                password="long-enough-pw",
            )
    return a.id, b.id


def test_every_tenant_table_is_marked() -> None:
    for table in metadata.sorted_tables:
        if "tenant_id" in table.c:
            assert table.info.get("tenant_scoped"), f"{table.name} has tenant_id but no mark"


@pytest.mark.parametrize(
    "make",
    [
        lambda: sa.select(users),
        lambda: sa.select(sa.func.count()).select_from(users),
        lambda: sa.select(tenants).where(tenants.c.id.in_(sa.select(users.c.tenant_id))),
        lambda: sa.select(tenants.c.id).join(users, users.c.tenant_id == tenants.c.id),
        lambda: sa.update(users).values(name="x"),
        lambda: sa.delete(users),
        lambda: sa.insert(users).values(
            tenant_id=1, email="e@x.cn", name="n", role="owner", password_hash="h", created_at=NOW
        ),
    ],
)
def test_unscoped_statements_are_refused(runtime: Runtime, make) -> None:  # type: ignore[no-untyped-def]
    _two_tenants(runtime)
    with runtime.engine.connect() as conn, pytest.raises(TenantScopeViolation):
        conn.execute(make())


def test_scope_sees_only_its_tenant(runtime: Runtime) -> None:
    a, b = _two_tenants(runtime)
    with runtime.engine.begin() as conn:
        emails = conn.execute(TenantScope(a).select(users, users.c.email)).scalars().all()
        assert emails == ["o@tea-a.cn"]
        # An update through scope a cannot touch b's rows, even when aimed at them by id.
        b_user = conn.execute(TenantScope(b).select(users, users.c.id)).scalar_one()
        result = conn.execute(
            TenantScope(a).update(users).where(users.c.id == b_user).values(name="hijacked")
        )
        assert result.rowcount == 0
        assert conn.execute(TenantScope(b).select(users, users.c.name)).scalar_one() == "o"
        deleted = conn.execute(TenantScope(a).delete(users).where(users.c.id == b_user))
        assert deleted.rowcount == 0


def test_scoped_insert_forces_the_tenant(runtime: Runtime) -> None:
    a, b = _two_tenants(runtime)
    with runtime.engine.begin() as conn:
        TenantScope(a).insert_many(
            conn,
            users,
            [
                {
                    "tenant_id": b,
                    "email": "x@x.cn",
                    "name": "x",
                    "role": "owner",
                    "password_hash": "h",
                    "created_at": NOW,
                }
            ],
        )
        owner = conn.execute(
            unscoped(sa.select(users.c.tenant_id).where(users.c.email == "x@x.cn"), "test")
        ).scalar_one()
    assert owner == a


def test_unscoped_needs_a_reason() -> None:
    with pytest.raises(ValueError):
        unscoped(sa.select(users), "")


@pytest.mark.parametrize("bad", [0, -1, "1", None])
def test_scope_rejects_bad_ids(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        TenantScope(bad)


def test_scoped_writes_cannot_name_another_tenant(runtime: Runtime) -> None:
    a, b = _two_tenants(runtime)
    row = {"email": "x@x.cn", "name": "x", "role": "owner", "password_hash": "h", "created_at": NOW}
    with runtime.engine.begin() as conn:
        with pytest.raises(TenantScopeViolation):
            conn.execute(TenantScope(a).insert(users), {**row, "tenant_id": b})
        with pytest.raises(TenantScopeViolation):
            conn.execute(TenantScope(a).insert(users), [{**row, "tenant_id": b}])
        with pytest.raises(TenantScopeViolation):
            conn.execute(TenantScope(a).update(users).values(tenant_id=b))
        # Naming one's own tenant is harmless.
        conn.execute(TenantScope(a).insert(users), {**row, "tenant_id": a})


def test_every_scoped_table_in_a_statement_must_be_limited(runtime: Runtime) -> None:
    from hongyan.db.tables import api_keys

    a, _ = _two_tenants(runtime)
    scope = TenantScope(a)
    with runtime.engine.connect() as conn:
        # Columns of a second table are limited automatically.
        rows = conn.execute(scope.select(users, users.c.email, api_keys.c.prefix)).all()
        assert rows == []
        joined = scope.select(users, users.c.email).join(
            api_keys, api_keys.c.tenant_id == users.c.tenant_id
        )
        with pytest.raises(TenantScopeViolation):
            conn.execute(joined)
        conn.execute(joined.where(scope.owns(api_keys)))
        sub = sa.select(api_keys.c.tenant_id).scalar_subquery()
        with pytest.raises(TenantScopeViolation):
            conn.execute(scope.select(users).where(users.c.tenant_id == sub))
        union = sa.union(sa.select(users.c.email), sa.select(users.c.name))
        with pytest.raises(TenantScopeViolation):
            conn.execute(union)


def test_sql_text_naming_tenant_tables_is_refused(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        with pytest.raises(TenantScopeViolation):
            conn.execute(sa.text("SELECT email FROM users"))
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert conn.execute(unscoped(sa.text("SELECT count(*) FROM users"), "test")).scalar() == 0

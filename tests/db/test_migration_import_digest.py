"""Migration 0021: contacts get the digest of the import row last applied, and a trigger that
clears it on any update that leaves it as it was; a downgrade takes both away."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_tags, contacts
from hongyan.runtime import Runtime


@pytest.fixture
def tenant_id(runtime: Runtime) -> int:
    from hongyan.tenants import service

    with runtime.engine.begin() as conn:
        return service.create_tenant(conn, runtime.clock, slug="tea", name="茶").id


def _contact(runtime: Runtime, tenant_id: int) -> int:
    with runtime.engine.begin() as conn:
        return int(
            conn.execute(
                TenantScope(tenant_id)
                .insert(contacts)
                .values(
                    phone_index=b"p" * 32, phone_cipher=b"c", phone_masked="138****0000",
                    country="CN", attrs={}, source="api", created_at=runtime.clock.now(),
                    updated_at=runtime.clock.now(), import_digest=b"d" * 16,
                )
                .returning(contacts.c.id)
            ).scalar_one()
        )  # fmt: skip


def _digest(runtime: Runtime, tenant_id: int, values: dict[str, object]) -> bytes | None:
    scope = TenantScope(tenant_id)
    with runtime.engine.begin() as conn:
        conn.execute(scope.update(contacts).values(**values))
        got = conn.execute(scope.select(contacts, contacts.c.import_digest)).scalar_one()
    return None if got is None else bytes(got)


def test_any_other_update_clears_the_digest(runtime: Runtime, tenant_id: int) -> None:
    _contact(runtime, tenant_id)
    assert _digest(runtime, tenant_id, {"import_digest": b"e" * 16}) == b"e" * 16  # an import
    assert _digest(runtime, tenant_id, {"city": "上海"}) is None  # anything else
    assert _digest(runtime, tenant_id, {"import_digest": b"f" * 16, "city": "北京"}) == b"f" * 16
    # Setting the digest it has is no import's doing (an import skips that row): cleared.
    assert _digest(runtime, tenant_id, {"import_digest": b"f" * 16}) is None
    assert _digest(runtime, tenant_id, {"gender": "f"}) is None  # and it stays cleared


def test_the_digest_goes_and_comes_back(runtime: Runtime, tenant_id: int) -> None:
    from alembic import command

    cid = _contact(runtime, tenant_id)
    scope = TenantScope(tenant_id)
    with runtime.engine.begin() as conn:
        conn.execute(
            scope.insert(contact_tags).values(
                contact_id=cid, tag="VIP", created_at=runtime.clock.now()
            )
        )
    cfg = migrate._config()
    with runtime.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
    columns = {c["name"] for c in sa.inspect(runtime.engine).get_columns("contacts")}
    assert "import_digest" not in columns
    with runtime.engine.begin() as conn:  # the trigger went with it: updates still work
        conn.execute(TenantScope(tenant_id).update(contacts).values(city="上海"))
    with runtime.engine.connect() as conn:  # the contact's tags stayed (no table rebuild)
        assert conn.execute(scope.select(contact_tags, contact_tags.c.tag)).scalars().all() == [
            "VIP"
        ]
    assert migrate.upgrade(runtime.engine) == migrate.head_revision()
    assert _digest(runtime, tenant_id, {"import_digest": b"e" * 16}) == b"e" * 16
    assert _digest(runtime, tenant_id, {"city": "广州"}) is None

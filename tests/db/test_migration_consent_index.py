"""Migration 0020: the consent ledger's one-column tenant index goes (the composite index that
leads with tenant_id serves every query), and comes back on a downgrade."""

from __future__ import annotations

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.runtime import Runtime

INDEX = "ix_consent_records_tenant_id"


def _indexes(runtime: Runtime) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(runtime.engine).get_indexes("consent_records")}


def test_the_tenant_index_goes_and_comes_back(runtime: Runtime) -> None:
    from alembic import command

    assert INDEX not in _indexes(runtime)
    assert "ix_consent_records_number" in _indexes(runtime)
    cfg = migrate._config()
    with runtime.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0019")
    assert INDEX in _indexes(runtime)
    assert migrate.upgrade(runtime.engine) == migrate.head_revision()
    assert INDEX not in _indexes(runtime)

"""Migration 0022: conversions and journey enrolments may have no contact (an erased person's,
unlinked by ``forget``), and a conversion may carry its buyer's place; a downgrade puts the
NOT NULL back (an unlinked enrolment goes, an unlinked conversion takes contact id 0)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import contacts, conversions, journey_enrolments, journeys
from hongyan.runtime import Runtime
from hongyan.tenants import service

PLACE = ("number_province", "number_city", "carrier")


def _nullable(runtime: Runtime, table: str) -> dict[str, bool]:
    return {c["name"]: c["nullable"] for c in sa.inspect(runtime.engine).get_columns(table)}


def _rows(runtime: Runtime, sql: str) -> list[tuple[object, ...]]:
    with runtime.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(unscoped(sa.text(sql), "test check"))]


def test_unlinked_rows_are_allowed_and_a_downgrade_refuses_them(runtime: Runtime) -> None:
    from alembic import command

    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        tid = service.create_tenant(conn, runtime.clock, slug="tea", name="茶").id
        scope = TenantScope(tid)
        cid = conn.execute(
            scope.insert(contacts)
            .values(
                phone_index=b"p" * 32, phone_cipher=b"c", phone_masked="138****0000",
                country="CN", attrs={}, source="api", created_at=now, updated_at=now,
            )
            .returning(contacts.c.id)
        ).scalar_one()  # fmt: skip
        jid = conn.execute(
            scope.insert(journeys)
            .values(
                name="加购", trigger="add_to_cart", state="active", created_by="t",
                created_at=now, updated_at=now,
            )
            .returning(journeys.c.id)
        ).scalar_one()  # fmt: skip
        for who, key in ((cid, "e1"), (None, "已删除")):
            conn.execute(
                scope.insert(journey_enrolments).values(
                    journey_id=jid, contact_id=who, event_key=key, state="exited", step=1,
                    next_at=now, entered_at=now, updated_at=now,
                )
            )  # fmt: skip
        for who, key, place in (
            (cid, "o1", (None,) * 3),
            (None, "已删除:2", ("江苏", "南京", "cmcc")),
        ):
            conn.execute(
                scope.insert(conversions).values(
                    order_key=key, event_id="x", contact_id=who, method="click", amount_fen=100,
                    ordered_at=now, created_at=now + timedelta(seconds=1), journey_id=jid,
                    **dict(zip(PLACE, place, strict=True)),
                )
            )  # fmt: skip
    assert _nullable(runtime, "conversions")["contact_id"]
    assert _nullable(runtime, "journey_enrolments")["contact_id"]

    cfg = migrate._config()
    with runtime.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0021")
    assert not _nullable(runtime, "conversions")["contact_id"]
    assert not _nullable(runtime, "journey_enrolments")["contact_id"]
    assert not set(PLACE) & set(_nullable(runtime, "conversions"))
    assert _rows(runtime, "SELECT contact_id, event_key FROM journey_enrolments") == [(cid, "e1")]
    assert sorted(_rows(runtime, "SELECT contact_id, amount_fen FROM conversions")) == [
        (0, 100),
        (cid, 100),
    ]

    assert migrate.upgrade(runtime.engine) == migrate.head_revision()
    assert _nullable(runtime, "conversions")["contact_id"]
    assert set(PLACE) <= set(_nullable(runtime, "conversions"))
    # the journey's index stays partial through both rebuilds
    index = {i["name"]: i for i in sa.inspect(runtime.engine).get_indexes("conversions")}
    assert "ix_conversions_journey" in index
    if runtime.engine.dialect.name == "sqlite":
        sql = _rows(runtime, "SELECT sql FROM sqlite_master WHERE name = 'ix_conversions_journey'")
        assert "WHERE journey_id IS NOT NULL" in str(sql[0][0])

"""Migration 0015: messages, links and clicks take their contact's place, set-based."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from hongyan.db import migrate
from hongyan.db.scope import unscoped
from hongyan.runtime import Runtime
from hongyan.tenants import service


def test_existing_messages_get_their_contacts_places(bare_runtime: Runtime) -> None:
    engine, now = bare_runtime.engine, bare_runtime.clock.now()
    migrate.upgrade(engine, "0014")
    with engine.begin() as conn:
        tid = service.create_tenant(conn, bare_runtime.clock, slug="tea", name="Tea").id
        other = service.create_tenant(conn, bare_runtime.clock, slug="other", name="Other").id
        meta = sa.MetaData()
        contacts = sa.Table("contacts", meta, autoload_with=conn)
        messages = sa.Table("messages", meta, autoload_with=conn)

        def contact(tenant: int, n: int, province: str | None, city: str | None) -> int:
            row = {
                "tenant_id": tenant, "phone_index": bytes([n]) * 32, "phone_cipher": b"x",
                "phone_masked": "138****0000", "country": "CN", "carrier": "cmcc",
                "number_province": province, "number_city": city, "attrs": "{}",
                "source": "import", "created_at": now, "updated_at": now,
            }  # fmt: skip
            stmt = sa.insert(contacts).values(row).returning(contacts.c.id)
            return int(conn.execute(unscoped(stmt, "test set-up")).scalar_one())

        gd = contact(tid, 1, "广东", "深圳")
        nowhere = contact(tid, 2, None, None)
        theirs = contact(other, 3, "北京", "北京")

        def message(tenant: int, contact_id: int | None) -> int:
            row = {
                "tenant_id": tenant, "lane": 2, "category": "marketing", "source": "campaign",
                "dest_cipher": b"x", "dest_index": bytes(32), "dest_masked": "138****0000",
                "body": "hi", "encoding": "gsm7", "parts": 1, "state": "delivered",
                "due_at": now, "expires_at": now + timedelta(days=1), "created_at": now,
                "campaign_id": 1, "variant": "A", "contact_id": contact_id,
            }  # fmt: skip
            stmt = sa.insert(messages).values(row).returning(messages.c.id)
            return int(conn.execute(unscoped(stmt, "test set-up")).scalar_one())

        links = sa.Table("links", meta, autoload_with=conn)
        clicks = sa.Table("clicks", meta, autoload_with=conn)
        link_row = {
            "tenant_id": tid, "code": "abc1234", "campaign_id": 1, "variant": "A",
            "contact_id": gd, "target": "https://shop.example/", "created_at": now,
        }  # fmt: skip
        stmt = sa.insert(links).values(link_row).returning(links.c.id)
        link_id = int(conn.execute(unscoped(stmt, "test set-up")).scalar_one())
        click_row = {
            "tenant_id": tid, "link_id": link_id, "campaign_id": 1, "variant": "A",
            "contact_id": gd, "at": now, "user_agent": "UA",
        }  # fmt: skip
        conn.execute(unscoped(sa.insert(clicks).values(click_row), "test set-up"))
        ids = {
            "gd": message(tid, gd),
            "nowhere": message(tid, nowhere),
            "api": message(tid, None),
            # Another tenant's contact id on this tenant's message: never copied across.
            "cross": message(tid, theirs),
            "theirs": message(other, theirs),
        }
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            unscoped(sa.text("SELECT id, number_province, number_city FROM messages"), "test check")
        ).all()
        placed = [
            conn.execute(
                unscoped(
                    sa.text(f"SELECT number_province, number_city, carrier FROM {t}"),  # noqa: S608
                    "test check",
                )
            ).one()
            for t in ("links", "clicks")
        ]
    assert [tuple(p) for p in placed] == [("广东", "深圳", "cmcc")] * 2
    got = {r.id: (r.number_province, r.number_city) for r in rows}
    assert {k: got[v] for k, v in ids.items()} == {
        "gd": ("广东", "深圳"),
        "nowhere": (None, None),
        "api": (None, None),
        "cross": (None, None),
        "theirs": ("北京", "北京"),
    }

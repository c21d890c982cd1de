"""`keys rotate`: every ciphertext moves to the new active key; old data stays readable."""

from __future__ import annotations

import sqlalchemy as sa

from hongyan.db.scope import unscoped
from hongyan.db.tables import users
from hongyan.runtime import Runtime
from hongyan.security.keyring import KeyRing
from hongyan.security.rotation import pending, rotate
from hongyan.tenants import service


def test_rotation_in_batches(runtime: Runtime) -> None:
    old = runtime.keyring
    with runtime.engine.begin() as conn:
        t = service.create_tenant(conn, runtime.clock, slug="shop", name="S")
        for i in range(7):
            service.create_user(
                conn,
                runtime.clock,
                old,
                tenant_id=t.id,
                email=f"u{i}@s.cn",
                name="u",
                role="analyst",
                password="long-enough-pw",
                phone=f"+861380000000{i}",
            )
        service.create_user(
            conn,
            runtime.clock,
            old,
            tenant_id=t.id,
            email="nophone@s.cn",
            name="n",
            role="analyst",
            password="long-enough-pw",
        )
    s = runtime.settings
    new = KeyRing.parse(f"{s.data_keys},k2:{KeyRing.generate_key()}", "k2", s.index_key)
    assert pending(runtime.engine, new) == 7
    calls: list[int] = []
    report = rotate(runtime.engine, new, batch_size=3, progress=lambda _c, n: calls.append(n))
    assert report.rotated == 7 and report.scanned == 7 and report.skipped_changed == 0
    assert calls == [3, 6, 7]
    assert pending(runtime.engine, new) == 0
    assert rotate(runtime.engine, new).rotated == 0  # idempotent
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            unscoped(
                sa.select(users.c.tenant_id, users.c.email, users.c.phone_cipher)
                .where(users.c.phone_cipher.is_not(None))
                .order_by(users.c.id),
                "test",
            )
        ).all()
    for i, row in enumerate(rows):
        assert KeyRing.key_id_of(row.phone_cipher) == "k2"
        assert new.decrypt(row.phone_cipher, f"tenant:{t.id}:user-phone") == f"+861380000000{i}"
    # The blind index does not change with rotation, so lookups keep working.
    assert new.blind_index("+8613800000000", "x") == old.blind_index("+8613800000000", "x")

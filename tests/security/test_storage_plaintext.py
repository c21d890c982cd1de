"""No stored phone number appears in plaintext in the SQLite file or a PostgreSQL dump."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.runtime import Runtime
from hongyan.tenants import service

NUMBERS = ["+8613812345678", "+8619912340000", "+8617100001111"]


def _forms(number: str) -> list[bytes]:
    national = number.removeprefix("+86")
    forms = [number, national, national[3:], "".join(reversed(national))]
    out = []
    for f in forms:
        out += [f.encode("utf-8"), f.encode("utf-16-le"), f.encode("utf-16-be")]
    return out


def _store(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        t = service.create_tenant(conn, runtime.clock, slug="pharmacy", name="P")
        for i, number in enumerate(NUMBERS):
            service.create_user(
                conn,
                runtime.clock,
                runtime.keyring,
                tenant_id=t.id,
                email=f"u{i}@p.cn",
                name="u",
                role="operator",
                password="long-enough-pw",
                phone=number,
            )
        for number in NUMBERS:
            outbox.enqueue(
                conn,
                runtime.clock,
                runtime.keyring,
                t.id,
                NewMessage(number, "您的验证码是 4821"),
                max_parts=6,
            )
        masked = [service.user_phone_masked(conn, runtime.keyring, t.id, uid) for uid in (1, 2, 3)]
    assert masked == ["138****5678", "199****0000", "171****1111"]


def _database_bytes(runtime: Runtime, tmp_path: Path) -> bytes:
    url = runtime.engine.url
    if url.get_backend_name() == "sqlite":
        runtime.engine.dispose()  # checkpoint the WAL into the file
        data = Path(str(url.database)).read_bytes()
        for extra in ("-wal", "-shm"):
            side = Path(str(url.database) + extra)
            if side.exists():
                data += side.read_bytes()
        return data
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.fail("pg_dump is needed to check the PostgreSQL dump")
    out = tmp_path / "dump.sql"
    subprocess.run(
        [
            pg_dump,
            "--no-owner",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-f",
            str(out),
            str(url.database),
        ],
        check=True,
    )
    return out.read_bytes()


def test_no_plaintext_number_at_rest(runtime: Runtime, tmp_path: Path) -> None:
    _store(runtime)
    data = _database_bytes(runtime, tmp_path)
    assert b"u0@p.cn" in data  # the check reads the real storage
    assert "验证码".encode() in data
    for number in NUMBERS:
        for form in _forms(number):
            assert form not in data, f"{form!r} found in storage"


def test_ciphertext_is_bound_to_its_tenant(runtime: Runtime) -> None:
    from hongyan.db.scope import unscoped
    from hongyan.db.tables import users
    from hongyan.security.keyring import KeyRingError

    _store(runtime)
    with runtime.engine.connect() as conn:
        blob = conn.execute(
            unscoped(sa.select(users.c.phone_cipher).where(users.c.id == 1), "test")
        ).scalar_one()
    assert runtime.keyring.decrypt(blob, "tenant:1:user-phone") == NUMBERS[0]
    with pytest.raises(KeyRingError):
        runtime.keyring.decrypt(blob, "tenant:2:user-phone")

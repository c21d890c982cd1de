"""Driver-level bulk inserts and lookups: the tenant is forced, values read back as SQLAlchemy
wrote them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.db import bulk
from hongyan.db.bulk import to_json
from hongyan.db.scope import TenantScope, TenantScopeViolation
from hongyan.db.tables import audit_log, channels, contact_fields, contacts
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


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=_json_values | st.dictionaries(st.text(), st.text(), max_size=6))
def test_to_json_writes_what_json_dumps_writes(value: Any) -> None:
    # the flat object of strings takes its own path; the text must not differ from the encoder's
    assert to_json(value) == json.dumps(value, ensure_ascii=False)


def test_to_json_non_string_keys_fall_back() -> None:
    assert to_json({1: "a", "b": 2}) == json.dumps({1: "a", "b": 2}, ensure_ascii=False)


# -- packed binary COPY rows ----------------------------------------------------------------------

_CONTACT_COLUMNS = ("phone_index", "phone_cipher", "phone_masked", "country", "carrier", "mvno",
                    "name_cipher", "birth_month", "attrs", "time_zone")  # fmt: skip
_contact_rows = st.tuples(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=1, max_size=80),
    st.text(max_size=24),
    st.sampled_from(["CN", "US"]),
    st.none() | st.sampled_from(["cmcc", "cucc", "intl"]),
    st.booleans(),
    st.none() | st.binary(max_size=60),
    st.none() | st.integers(-(2**15), 2**15 - 1),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3).map(to_json),
    st.none() | st.text(max_size=30),
)


@given(rows=st.lists(_contact_rows, max_size=20))
def test_packed_rows_unpack_to_what_was_packed(rows: list[tuple[Any, ...]]) -> None:
    packer = bulk.PackedRows(contacts, _CONTACT_COLUMNS, ("source", "created_at", "updated_at"))
    for row in rows:
        assert packer.unpack(packer.pack(row)) == row


def test_packed_rows_refuse_the_tenant_column_and_unscoped_tables() -> None:
    with pytest.raises(TenantScopeViolation):
        bulk.PackedRows(contacts, ("tenant_id", "phone_index"), ())
    with pytest.raises(TenantScopeViolation):
        bulk.PackedRows(channels, ("name",), ())


def _two_tenants(runtime: Runtime) -> tuple[int, int, dict[str, Any]]:
    """Two tenants, and the constant columns of a contact imported now."""
    with runtime.engine.begin() as conn:
        a = service.create_tenant(conn, runtime.clock, slug="aaa", name="A").id
        b = service.create_tenant(conn, runtime.clock, slug="bbb", name="B").id
    now = runtime.clock.now()
    return a, b, {"source": "import", "created_at": now, "updated_at": now}


def test_copy_packed_reads_back_as_insert_rows_wrote(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        with runtime.engine.begin() as conn, pytest.raises(ValueError, match="PostgreSQL"):
            packer = bulk.PackedRows(contacts, _CONTACT_COLUMNS, ("source", "created_at",
                                                                  "updated_at"))  # fmt: skip
            bulk.copy_packed(conn, TenantScope(1), packer, [b"x"], {})
        return
    a, b, tail = _two_tenants(runtime)
    now = tail["created_at"]
    rows = [
        (bytes([i]) * 32, b"\x01cipher" + bytes([i]), "138****5678", "CN", "cmcc", i % 2 == 0,
         None if i % 3 else b"name", i * 1000 - 5000, to_json({"等级": "金卡", "n": i}),
         None if i % 2 else "Asia/Tokyo")
        for i in range(1, 9)
    ]  # fmt: skip
    packer = bulk.PackedRows(contacts, _CONTACT_COLUMNS, ("source", "created_at", "updated_at"))
    with runtime.engine.begin() as conn:
        assert bulk.copy_packed(conn, TenantScope(a), packer, [packer.pack(r) for r in rows], tail)
        bulk.insert_rows(conn, TenantScope(b), contacts, _CONTACT_COLUMNS, rows, tail, raw=True)
        with pytest.raises(ValueError, match="tail"):
            bulk.copy_packed(conn, TenantScope(a), packer, [packer.pack(rows[0])], {})
    read = [
        sa.select(*(contacts.c[n] for n in (*_CONTACT_COLUMNS, "source", "created_at")))
        .where(contacts.c.tenant_id == t)
        .order_by(contacts.c.phone_index)
        .execution_options(hongyan_unscoped="test compares two tenants")
        for t in (a, b)
    ]
    with runtime.engine.connect() as conn:
        packed, plain = (conn.execute(q).all() for q in read)
    assert len(packed) == len(rows)
    assert packed == plain
    assert packed[0].created_at == now and packed[0].attrs == {"等级": "金卡", "n": 1}


def test_raw_rows_bind_blobs_and_flags_as_sqlalchemy_writes_them(runtime: Runtime) -> None:
    # On SQLite, bytes and booleans are handed to the driver as bytearray and int (its fast
    # binding path): they must be stored with the same storage class as through SQLAlchemy.
    a, b, tail = _two_tenants(runtime)
    row = (b"\x07" * 32, b"\x01cipher", "138****5678", "CN", "cmcc", True, None, None, "{}", None)
    with runtime.engine.begin() as conn:
        bulk.insert_rows(conn, TenantScope(a), contacts, _CONTACT_COLUMNS, [row], tail, raw=True)
        values = {**dict(zip(_CONTACT_COLUMNS, row, strict=True)), **tail, "attrs": {}}
        conn.execute(TenantScope(b).insert(contacts), [values])
    c = contacts.c
    with runtime.engine.connect() as conn:
        got = conn.execute(
            sa.select(c.tenant_id, c.phone_index, c.phone_cipher, c.mvno)
            .order_by(c.tenant_id)
            .execution_options(hongyan_unscoped="test compares two tenants")
        ).all()
        assert [tuple(g)[1:] for g in got] == [(b"\x07" * 32, b"\x01cipher", True)] * 2
        assert type(got[0].phone_index) is bytes
        if runtime.engine.dialect.name == "sqlite":
            classes = conn.exec_driver_sql(
                "SELECT typeof(phone_index), typeof(phone_cipher), typeof(mvno), mvno"
                " FROM contacts ORDER BY tenant_id"
            ).all()
            assert classes == [("blob", "blob", "integer", 1)] * 2


def test_sqlite_binding_converts_only_bytes_and_bools() -> None:
    blob = bulk._sqlite_binding(contacts.c.phone_cipher)
    flag = bulk._sqlite_binding(contacts.c.mvno)
    assert blob is not None and flag is not None
    assert type(blob(b"\x01")) is bytearray and blob(b"\x01") == b"\x01"
    assert blob("text") == "text" and blob(3) == 3 and blob(None) is None
    assert flag(True) == 1 and type(flag(True)) is int and flag(None) is None and flag(0) == 0
    assert bulk._sqlite_binding(contacts.c.city) is None


def test_fetch_in_per_key_finds_what_any_finds(runtime: Runtime) -> None:
    a, b, tail = _two_tenants(runtime)
    made = [(bytes([i]) * 32, b"c", "138****5678", "CN", None, False, None, None, "{}", None)
            for i in range(1, 7)]  # fmt: skip
    with runtime.engine.begin() as conn:
        bulk.insert_rows(conn, TenantScope(a), contacts, _CONTACT_COLUMNS, made[:4], tail, raw=True)
        bulk.insert_rows(conn, TenantScope(b), contacts, _CONTACT_COLUMNS, made[4:], tail, raw=True)
    asked = [bytes([i]) * 32 for i in (3, 1, 3, 5, 9)]  # a repeat, b's key, an unknown key
    with runtime.engine.connect() as conn:
        for keys in (asked, [*asked, b"short"]):  # fixed-width keys, then mixed widths
            plain = bulk.fetch_in(
                conn, TenantScope(a), contacts, ("phone_index",), "phone_index", keys
            )
            each = bulk.fetch_in(
                conn, TenantScope(a), contacts, ("phone_index",), "phone_index", keys, per_key=True
            )
            assert sorted(plain) == sorted(each) == [(bytes([1]) * 32,), (bytes([3]) * 32,)]
        names = bulk.fetch_in(
            conn, TenantScope(a), contacts, ("phone_masked",), "phone_masked", ["138****5678"],
            per_key=True,
        )  # fmt: skip
        assert names == [("138****5678",)] * 4

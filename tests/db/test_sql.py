"""``among`` and the text form of PostgreSQL arrays: whatever the values, the server reads back
exactly the list it was given, and ``among`` selects the same rows on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.db.sql import among, pg_array
from hongyan.runtime import Runtime
from tests.conftest import pg_admin

# Any text PostgreSQL can hold (no NUL), with the characters an array literal treats specially
# drawn often: quotes, backslashes, braces, commas, spaces and the word NULL.
texts = st.one_of(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))),
    st.text(alphabet='"\\{},NUL l\t\n鸿雁'),
    st.sampled_from(["NULL", "null", "", " ", '""', "\\"]),
)


def test_pg_array_text_form() -> None:
    assert pg_array([1, -2, 30], int) == "{1,-2,30}"
    assert pg_array([], int) == "{}"
    assert pg_array(["a", None, 'b"c', "d\\e", "NULL"]) == '{"a",NULL,"b\\"c","d\\\\e","NULL"}'
    with pytest.raises(ValueError, match="NUL"):
        pg_array(["a\x00b"])
    with pytest.raises(TypeError):
        pg_array([b"bytes"])
    with pytest.raises((TypeError, ValueError)):
        pg_array([None], int)


@pytest.fixture(scope="module")
def pg() -> sa.Connection:
    admin = pg_admin()
    if admin is None:
        pytest.skip("PostgreSQL does not answer; the server round trip is skipped")
    with admin.connect() as conn:
        yield conn


@given(values=st.lists(st.one_of(st.none(), texts), max_size=20))
def test_text_arrays_read_back_exactly(pg: sa.Connection, values: list[str | None]) -> None:
    got = pg.execute(sa.text("SELECT CAST(:a AS text[])"), {"a": pg_array(values)}).scalar_one()
    assert got == values


@given(values=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20))
def test_integer_arrays_read_back_exactly(pg: sa.Connection, values: list[int]) -> None:
    got = pg.execute(
        sa.text("SELECT CAST(:a AS bigint[])"), {"a": pg_array(values, int)}
    ).scalar_one()
    assert got == values


def test_among_selects_the_same_rows_on_both_databases(runtime: Runtime) -> None:
    meta = sa.MetaData()
    t = sa.Table(
        "among_probe",
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code", sa.String(32)),
    )
    rows = [{"id": i, "code": c} for i, c in enumerate(['a"b', "c\\d", "NULL", "x,y", "{z}", "七"])]
    with runtime.engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(t.insert(), rows)
        by_code = conn.execute(
            sa.select(t.c.id).where(
                among(conn, t.c.code, ['a"b', "NULL", "{z}", "nope"], sa.String)
            )
        ).scalars()
        assert sorted(by_code) == [0, 2, 4]
        by_id = conn.execute(
            sa.select(t.c.code).where(among(conn, t.c.id, [1, 5, 99], sa.BigInteger))
        ).scalars()
        assert sorted(by_id) == sorted(["c\\d", "七"])
        assert (
            conn.execute(sa.select(t.c.id).where(among(conn, t.c.id, [], sa.BigInteger))).all()
            == []
        )
        meta.drop_all(conn)

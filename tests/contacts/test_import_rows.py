"""A new contact's row, as a tuple for the driver and packed for PostgreSQL's binary COPY: the
two forms must hold the same values (pure; no database)."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.contacts import importer
from hongyan.contacts.geo import table as segment_table
from hongyan.contacts.importer import NEW_COLUMNS, Parsed
from hongyan.security.keyring import KeyRing

RING = KeyRing({"k1": bytes(range(32))}, "k1", b"i" * 32)
BUILDER = importer._Builder(RING, 7, segment_table())
CIPHERS = {
    "phone_cipher": "tenant:7:phone",
    "name_cipher": "tenant:7:contact-name",
    "birthday_cipher": "tenant:7:contact-birthday",
}

_cn = st.builds(
    lambda seg, rest: f"+86{seg}{rest:08d}",
    st.sampled_from(["138", "134", "170", "171", "192", "199", "166", "145", "100"]),
    st.integers(0, 10**8 - 1),
)
_foreign = st.sampled_from(["+12025550123", "+447911123456", "+818012345678", "+85291234567"])


def _make(e164: str, *fields: Any) -> Parsed:
    name, gender, born, province, city, zone, attrs = fields
    index = RING.blind_index(e164, "tenant:7:phone")
    return Parsed(e164, index, name, gender, born, province, city, zone, frozenset(), attrs)


_parsed = st.builds(
    _make,
    _cn | _foreign,
    st.none() | st.text(min_size=1, max_size=12),
    st.sampled_from([None, "f", "m"]),
    st.none() | st.dates(date(1900, 1, 1), date(2100, 12, 31)),
    st.none() | st.sampled_from(["上海", "广东", "x" * 16]),
    st.none() | st.text(min_size=1, max_size=32),
    st.none() | st.sampled_from(["Asia/Tokyo", "America/New_York"]),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6) | st.integers(), max_size=3),
)


def _comparable(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(NEW_COLUMNS, row, strict=True))
    for column, context in CIPHERS.items():  # fresh nonces: compare what they decrypt to
        if out[column] is not None:
            out[column] = RING.decrypt(out[column], context)
    return out


@given(parsed=_parsed)
@settings(max_examples=300)
def test_packed_row_holds_the_values_of_new_row(parsed: Parsed) -> None:
    packed = BUILDER.packed_row(parsed)
    assert _comparable(BUILDER.packer.unpack(packed)) == _comparable(BUILDER.new_row(parsed))


def test_packed_row_is_the_same_from_its_caches() -> None:
    # the second row of a number block and birthday comes from the caches
    first = Parsed("+8613812345678", b"a" * 32, birthday=date(1990, 5, 6))
    second = Parsed("+8613812349999", b"b" * 32, birthday=date(1990, 5, 6))
    for p in (first, second, first):
        assert _comparable(BUILDER.packer.unpack(BUILDER.packed_row(p))) == _comparable(
            BUILDER.new_row(p)
        )

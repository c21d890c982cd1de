"""Numbers as people write them, normalised to E.164 (pure), and where they are from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.contacts import geo
from hongyan.contacts.numbers import _BY_PREFIX, NUMBER_PROBLEMS, NumberProblem, normalise

E = "+8613812345678"


# Every way a person writes +86 138 1234 5678 (tests/contacts/test_import_rows.py sends each
# through an import's row parser too).
MOBILE_WAYS = [
    "13812345678",
    "138 1234 5678",
    "138-1234-5678",
    "+86 138 1234 5678",
    "+86-138-1234-5678",
    "+8613812345678",
    "008613812345678",
    "0086 138 1234 5678",
    "8613812345678",
    "１３８１２３４５６７８",
    "＋８６１３８１２３４５６７８",
    "'13812345678",
    "  13812345678  ",
    "138\u30001234\u30005678",
    "(138) 1234-5678",
    "138.1234.5678",
    "\t13812345678\u00a0",
    "+86\u00a013812345678",
    "+86\u3000138 1234 5678",
    "+86 (138) 1234 5678",
    "\t+86 138-1234-5678",
]


@pytest.mark.parametrize("text", MOBILE_WAYS)
def test_every_way_of_writing_a_mobile(text: str) -> None:
    assert normalise(text) == E


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("16612345678", "+8616612345678"),  # 16x
        ("17112345678", "+8617112345678"),  # 171 virtual operators
        ("17001234567", "+8617001234567"),  # 1700 virtual (ctcc host)
        ("19212345678", "+8619212345678"),  # 192 China Broadcasting Network
        ("19912345678", "+8619912345678"),
        ("14812345678", "+8614812345678"),
        ("+447400123456", "+447400123456"),  # a UK mobile through phonenumbers
        ("00447400123456", "+447400123456"),
        ("+1 650 253 0000", "+16502530000"),  # a US number (fixed line or mobile)
    ],
)
def test_segments_and_other_countries(text: str, e164: str) -> None:
    assert normalise(text) == e164


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1381234567", "wrong_length"),
        ("138123456789", "wrong_length"),
        ("14012345678", "unknown_segment"),
        ("12012345678", "unknown_segment"),
        ("+8610012345678", "unknown_segment"),
        ("13x12345678", "bad_characters"),
        ("=cmd|' /C calc'!A0", "bad_characters"),
        ("010-12345678", "not_mobile"),
        ("+442071838750", "not_mobile"),  # a London landline
        ("+999123456789", "invalid"),
    ],
)
def test_problems(text: str, code: str) -> None:
    with pytest.raises(NumberProblem) as caught:
        normalise(text)
    assert caught.value.code == code
    assert code in NUMBER_PROBLEMS


@given(st.sampled_from(sorted(_BY_PREFIX)), st.integers(0, 10**8 - 1))
def test_any_allocated_mobile_round_trips(prefix: str, rest: int) -> None:
    national = f"{prefix}{rest:08d}"
    assert normalise(national) == "+86" + national
    assert normalise("+86 " + national) == "+86" + national


@given(st.text(max_size=30))
def test_never_crashes(text: str) -> None:
    try:
        out = normalise(text)
    except NumberProblem as exc:
        assert exc.code in NUMBER_PROBLEMS
    else:
        assert out.startswith("+") and out[1:].isdigit()


def test_segment_table_covers_what_phonenumbers_does_not() -> None:
    """phonenumbers answers only 中国 for 16x, 171–175 and 19x; phone.dat has provinces."""
    import phonenumbers
    from phonenumbers import geocoder

    table = geo.table()
    assert table.version >= "2312" and table.prefixes > 490_000
    for number in ("+8616612345678", "+8617112345678", "+8619912345678", "+8619212345678"):
        assert geocoder.description_for_number(phonenumbers.parse(number), "zh") in ("中国", "")
        info = geo.describe(number)
        assert info.province and info.city, number
    info = geo.describe("+8613812345678")
    assert (info.country, info.carrier, info.province) == ("CN", "cmcc", "江苏")
    assert geo.describe("+8617001234567").mvno  # 1700: a virtual operator on China Telecom
    assert geo.describe("+8617001234567").carrier == "ctcc"
    assert geo.describe("+8619212345678").carrier == "cbn"
    foreign = geo.describe("+447400123456")
    assert (foreign.country, foreign.carrier, foreign.province) == ("GB", "intl", None)


def test_loading_another_data_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import struct

    record = "测试省|测试市|100000|010".encode() + b"\x00"
    header = struct.pack("<4si", b"2601", 8 + len(record))
    index = struct.pack("<iiB", 1380000, 8, 7)
    path = tmp_path / "phone.dat"
    path.write_bytes(header + record + index)
    table = geo.load(path)
    assert table.version == "2601" and table.prefixes == 1
    place = table.place("13800001234")
    assert place is not None and (place.province, place.city) == ("测试省", "测试市")
    assert table.place("13800011234") is None
    assert not table.is_virtual("13800001234")  # type 7: 广电, not virtual


def test_the_chinese_fast_path_never_calls_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way of writing a Chinese mobile is normalised, and its row built, with
    phonenumbers unable to parse anything; a foreign number does need it."""
    import phonenumbers

    from hongyan.contacts import importer
    from hongyan.security.keyring import KeyRing

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("phonenumbers called on the fast path")

    monkeypatch.setattr(phonenumbers, "parse", refuse)
    monkeypatch.setattr(phonenumbers, "is_valid_number", refuse)
    builder = importer._Builder(KeyRing({"k": bytes(32)}, "k", bytes(32)), 1, geo.table())
    plan = importer.plan_mapping(["手机号"], None)
    parse = importer.row_parser(plan, 0, lambda e164: e164.encode())
    for text in MOBILE_WAYS:
        parsed = parse([text])
        assert parsed.e164 == E
        builder.packed_row(parsed)
        builder.new_row(parsed)
    with pytest.raises(AssertionError, match="fast path"):
        normalise("+44 7911 123456")

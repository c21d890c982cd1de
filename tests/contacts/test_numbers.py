"""Which carrier a number is on (pure), checked against a table written out independently."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels.base import CARRIERS
from hongyan.contacts.numbers import _BY_PREFIX, _BY_PREFIX4, CARRIER_NAMES, carrier_of

# The allocation as published by the MIIT, virtual operators counted under their host network.
CMCC = (
    "134", "135", "136", "137", "138", "139", "147", "148", "150", "151", "152", "157", "158",
    "159", "165", "172", "178", "182", "183", "184", "187", "188", "195", "197", "198",
)  # fmt: skip
CUCC = (
    "130", "131", "132", "145", "146", "155", "156", "166", "167", "171", "175", "176", "185",
    "186", "196",
)  # fmt: skip
CTCC = (
    "133", "149", "153", "162", "173", "174", "177", "180", "181", "189", "190", "191", "193",
    "199",
)  # fmt: skip
EXPECTED_3 = {
    **dict.fromkeys(CMCC, "cmcc"),
    **dict.fromkeys(CUCC, "cucc"),
    **dict.fromkeys(CTCC, "ctcc"),
    "192": "cbn",
}
EXPECTED_4 = {
    "1349": "ctcc",  # the satellite block inside China Mobile's 134
    "1700": "ctcc",
    "1701": "ctcc",
    "1702": "ctcc",
    "1703": "cmcc",
    "1705": "cmcc",
    "1706": "cmcc",
    "1704": "cucc",
    "1707": "cucc",
    "1708": "cucc",
    "1709": "cucc",
}


def expected(national: str) -> str | None:
    return EXPECTED_4.get(national[:4]) or EXPECTED_3.get(national[:3])


def test_the_module_table_is_the_published_one() -> None:
    assert _BY_PREFIX == EXPECTED_3
    assert _BY_PREFIX4 == EXPECTED_4
    assert set(CARRIER_NAMES) == set(CARRIERS) - {"intl"}


@pytest.mark.parametrize("prefix", sorted(EXPECTED_3))
def test_every_three_digit_segment(prefix: str) -> None:
    for suffix in ("00000000", "12345678", "99999999"):
        national = prefix + suffix
        if national[:4] in EXPECTED_4:
            continue
        assert carrier_of("+86" + national) == EXPECTED_3[prefix], national


@pytest.mark.parametrize("prefix", sorted(EXPECTED_4))
def test_every_four_digit_exception(prefix: str) -> None:
    for suffix in ("0000000", "5678901", "9999999"):
        assert carrier_of("+86" + prefix + suffix) == EXPECTED_4[prefix]


def test_the_rest_of_134_is_china_mobile() -> None:
    for fourth in "012345678":
        assert carrier_of(f"+86134{fourth}1234567") == "cmcc"


UNALLOCATED = [p for n in range(100, 200) if (p := str(n)) not in EXPECTED_3 and p != "170"]


def test_unallocated_three_digit_prefixes_are_none() -> None:
    assert len(UNALLOCATED) == 100 - len(EXPECTED_3) - 1
    for prefix in UNALLOCATED:
        assert carrier_of(f"+86{prefix}12345678") is None, prefix


@given(st.from_regex(r"1[0-9]{10}", fullmatch=True))
def test_any_eleven_digit_number(national: str) -> None:
    assert carrier_of("+86" + national) == expected(national)


@pytest.mark.parametrize(
    "number",
    [
        "+447700900123",
        "+14155550100",
        "+85291234567",  # Hong Kong is outside the mainland
        "+85366123456",
        "+886912345678",
        "+819012345678",
        "+1234567",  # 7 digits: the shortest E.164 we accept
        "+123456789012345",  # 15 digits: the longest
    ],
)
def test_foreign_numbers_are_intl(number: str) -> None:
    assert carrier_of(number) == "intl"


@pytest.mark.parametrize(
    "number",
    [
        "+861012345678",  # Beijing landline
        "+862112345678",  # Shanghai landline
        "+8675512345678",  # Shenzhen landline: 11 digits, not a mobile segment
        "+8695555",  # a service number
        "+86138123456789",  # one digit too many
        "+861381234567",  # one too few
        "+8628123456789",  # 11 digits starting with 2
    ],
)
def test_chinese_numbers_outside_the_mobile_segments_are_none(number: str) -> None:
    assert carrier_of(number) is None


@pytest.mark.parametrize(
    "number",
    [
        "",
        "+",
        "abc",
        "13812345678",  # national, not E.164
        "8613812345678",
        "+86 138 1234 5678",
        "+86-13812345678",
        "+8613812345678\n",
        " +8613812345678",
        "＋８６１３８１２３４５６７８",
        "+86１３８１２３４５６７８",
        "+0123456789",
        "+123456",  # too short for E.164
        "+1234567890123456",  # too long
        "+44abc",
    ],
)
def test_bad_input_is_none(number: str) -> None:
    assert carrier_of(number) is None


@given(st.text(max_size=20))
def test_carrier_of_never_raises_and_stays_in_its_vocabulary(text: str) -> None:
    assert carrier_of(text) in (*CARRIERS, None)

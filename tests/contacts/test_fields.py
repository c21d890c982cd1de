"""Field parsing, header guessing, attribute names and formula escaping (pure)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.contacts import fields
from hongyan.contacts.sources import csv_bytes, escape_cell, is_formula
from hongyan.errors import ValidationFailed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1990-05-06", date(1990, 5, 6)),
        ("1990/5/6", date(1990, 5, 6)),
        ("1990.05.06", date(1990, 5, 6)),
        ("19900506", date(1990, 5, 6)),
        ("1990年5月6日", date(1990, 5, 6)),
        ("1990-05-06 00:00:00", date(1990, 5, 6)),
        ("1990-05-06T10:00:00", date(1990, 5, 6)),
    ],
)
def test_dates(text: str, expected: date) -> None:
    assert fields.parse_date(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1990-13-01", "1990-02-30", "5/6"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):
        fields.parse_date(text)


def test_numbers_booleans_genders_tags() -> None:
    assert fields.parse_number("1,200") == 1200 and fields.parse_number("¥99.5") == 99.5
    assert fields.parse_number("3.0") == 3.0 and isinstance(fields.parse_number("3"), int)
    for bad in ("x", "nan", "inf", ""):
        with pytest.raises(ValueError):
            fields.parse_number(bad)
    assert [fields.parse_boolean(x) for x in ("是", "否", "TRUE", "0", "y")] == [
        True,
        False,
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError):
        fields.parse_boolean("maybe")
    assert [fields.parse_gender(x) for x in ("男", "女士", "F", "male")] == ["m", "f", "f", "m"]
    assert fields.split_tags("VIP，新客;老客 | 门店A、") == ["VIP", "新客", "老客", "门店A"]
    with pytest.raises(ValueError):
        fields.split_tags("x" * 65)
    assert fields.parse_value("date", "2026/1/2") == "2026-01-02"
    assert fields.parse_value("text", "  金卡 ") == "金卡"


@given(st.integers(-(10**12), 10**12))
def test_integers_round_trip(n: int) -> None:
    assert fields.parse_number(f"{n:,}") == n


def test_headers_and_names() -> None:
    assert fields.guess_field("手机号码") == "phone"
    assert fields.guess_field(" Mobile Phone ") == "phone"
    assert fields.guess_field("客户姓名") == "name" and fields.guess_field("生日") == "birthday"
    assert fields.guess_field("会员等级") is None
    assert fields.check_attribute_name(" 会员等级 ") == "会员等级"
    for bad in ("1x", "a b", "{x}", "phone", "tags", "x" * 41, ""):
        with pytest.raises(ValidationFailed):
            fields.check_attribute_name(bad)
    with pytest.raises(ValidationFailed):
        fields.check_type("json")


@pytest.mark.parametrize(
    ("cell", "formula"),
    [
        ("=cmd|' /C calc'!A0", True),
        ("=1+1", True),
        ("@SUM(A1)", True),
        ("+cmd", True),
        ("-2+3+cmd|' /C calc'!A0", True),
        ("+86 138 1234 5678", False),
        ("-5", False),
        ("-", False),
        ("13812345678", False),
        ("李=王", False),
        ("", False),
    ],
)
def test_formula_cells(cell: str, formula: bool) -> None:
    assert is_formula(cell) is formula
    assert escape_cell(cell) == ("'" + cell if formula else cell)


def test_csv_for_excel() -> None:
    data = csv_bytes(["手机", "备注"], [["13812345678", '=HYPERLINK("x")']])
    assert data.startswith(b"\xef\xbb\xbf")
    assert "'=HYPERLINK" in data.decode("utf-8-sig")

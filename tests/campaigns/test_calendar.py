"""The marketing calendar: official holidays, loaded arrangements, solar terms, lunar festivals."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.campaigns.calendar import (
    ArrangementInvalid,
    CalendarUnknown,
    MarketingCalendar,
    Occasion,
    lunar_festivals,
    package_years,
    parse_arrangement,
    rhythm,
    solar_terms,
    upcoming,
)

D = dt.date


def test_2026_as_the_state_council_announced_it() -> None:
    """国办发明电〔2025〕7号, as the installed package carries it."""
    periods = {p.name_zh: p for p in MarketingCalendar().arrangement(2026).periods}
    assert (periods["元旦"].start, periods["元旦"].end, periods["元旦"].workdays) == (
        D(2026, 1, 1),
        D(2026, 1, 3),
        (D(2026, 1, 4),),
    )
    spring = periods["春节"]
    assert (spring.start, spring.end, spring.days) == (D(2026, 2, 15), D(2026, 2, 23), 9)
    assert spring.workdays == (D(2026, 2, 14), D(2026, 2, 28))
    assert periods["国庆节"].workdays == (D(2026, 9, 20), D(2026, 10, 10))
    assert periods["劳动节"].workdays == (D(2026, 5, 9),)
    assert periods["清明"].workdays == ()


@pytest.mark.parametrize(
    ("day", "kind", "name"),
    [
        (D(2026, 2, 17), "holiday", "春节"),
        (D(2026, 2, 14), "adjusted_workday", "春节"),  # a Saturday spent at work
        (D(2026, 3, 7), "weekend", None),
        (D(2026, 3, 9), "workday", None),
        (D(2026, 1, 4), "adjusted_workday", "元旦"),
    ],
)
def test_what_kind_of_day(day: dt.date, kind: str, name: str | None) -> None:
    info = MarketingCalendar().day(day)
    assert (info.kind, info.name_zh) == (kind, name)
    assert info.off == (kind in ("holiday", "weekend"))


def test_a_year_nobody_announced_is_an_error_not_a_guess() -> None:
    last = package_years()[-1]
    with pytest.raises(CalendarUnknown) as caught:
        MarketingCalendar().day(D(last + 1, 5, 1))
    assert caught.value.details["year"] == last + 1
    assert "hongyan calendar load" in caught.value.message_en
    # The rest of the year is still known: the stars do not wait for the State Council.
    year = MarketingCalendar().year(last + 1)
    assert year["holidays_known"] is False
    assert {o["kind"] for o in year["occasions"]} == {"solar_term", "lunar_festival", "shopping"}


ARRANGEMENT_2027: dict[str, Any] = {
    "year": 2027,
    "source": "测试用安排（非官方）",
    "holidays": [
        {"name": "元旦", "start": "2027-01-01", "end": "2027-01-03"},
        {
            "name": "Spring Festival",
            "start": "2027-02-05",
            "end": "2027-02-11",
            "workdays": ["2027-01-31", "2027-02-20"],
        },
    ],
}


def test_a_loaded_arrangement_makes_the_year_known() -> None:
    arrangement = parse_arrangement(ARRANGEMENT_2027)
    calendar = MarketingCalendar({2027: arrangement})
    assert calendar.day(D(2027, 2, 8)).kind == "holiday"
    assert calendar.day(D(2027, 2, 20)).kind == "adjusted_workday"
    assert calendar.day(D(2027, 3, 1)).kind == "workday"
    assert calendar.arrangement(2027).source == "测试用安排（非官方）"
    assert 2027 in calendar.known_years()


def test_a_loaded_arrangement_wins_over_the_package() -> None:
    fixed = parse_arrangement(
        {
            "year": 2026,
            "source": "correction",
            "holidays": [{"name": "春节", "start": "2026-02-16", "end": "2026-02-22"}],
        }
    )
    calendar = MarketingCalendar({2026: fixed})
    assert calendar.day(D(2026, 2, 15)).kind == "weekend"
    assert calendar.arrangement(2026).source == "correction"


def _with(**changes: Any) -> dict[str, Any]:
    holiday = {"name": "春节", "start": "2027-02-05", "end": "2027-02-11", "workdays": []}
    holiday.update(changes)
    return {"year": 2027, "source": "x", "holidays": [holiday]}


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"year": 2027, "source": "", "holidays": []},
        {"year": 1800, "source": "x", "holidays": [{"name": "春节"}]},
        {"year": 2027, "source": "x", "holidays": "春节"},
        _with(name="光棍节"),
        _with(start="2027-02-30"),
        _with(end="2027-02-01"),
        _with(end="2027-03-30"),
        _with(start="2028-02-05", end="2028-02-11"),
        _with(workdays=["2027-02-07"]),
        _with(workdays=["2027-06-01"]),
        _with(workdays="2027-02-14"),
        {
            "year": 2027,
            "source": "x",
            "holidays": [
                {"name": "春节", "start": "2027-02-05", "end": "2027-02-11"},
                {"name": "元旦", "start": "2027-02-10", "end": "2027-02-12"},
            ],
        },
    ],
)
def test_a_wrong_arrangement_is_refused_with_the_reason(data: Any) -> None:
    with pytest.raises(ArrangementInvalid) as caught:
        parse_arrangement(data)
    assert caught.value.message_zh.startswith("节假日安排文件有误")


def test_lunar_festivals_fall_in_their_statutory_holidays_every_known_year() -> None:
    """Two sources that know nothing of each other agree: the lunar date of 春节, 端午 and 中秋
    (lunar_python) lies in the holiday period the State Council gave it (chinesecalendar);
    端午 and 中秋 became statutory holidays in 2008."""
    calendar = MarketingCalendar()
    pairs = {"春节": "春节", "端午节": "端午", "中秋节": "中秋"}
    for year in package_years():
        periods = calendar.arrangement(year).periods
        for festival in lunar_festivals(year):
            holiday = pairs.get(festival.name_zh)
            if holiday is None or (year < 2008 and holiday != "春节"):
                continue
            spans = [(p.start, p.end) for p in periods if p.name_zh == holiday]
            if not spans:  # 中秋 merged into 国庆 in some years
                spans = [(p.start, p.end) for p in periods if p.name_zh == "国庆节"]
            assert any(s <= festival.date <= e for s, e in spans), (year, festival)


def test_known_dates() -> None:
    festivals = {o.name_zh: o.date for o in lunar_festivals(2027)}
    assert festivals["春节"] == D(2027, 2, 6)
    assert festivals["除夕"] == D(2027, 2, 5)
    assert festivals["中秋节"] == D(2027, 9, 15)
    terms = {o.name_zh: o.date for o in solar_terms(2027)}
    assert terms["立春"] == D(2027, 2, 4)
    assert {o.name_zh: o.date for o in solar_terms(2026)}["冬至"] == D(2026, 12, 22)


@given(st.integers(1901, 2099))
def test_every_year_has_24_solar_terms_in_order(year: int) -> None:
    terms = solar_terms(year)
    assert [t.name_zh for t in terms][:3] == ["小寒", "大寒", "立春"]
    assert len(terms) == 24 and len({t.name_zh for t in terms}) == 24
    assert all(a.date < b.date for a, b in itertools.pairwise(terms))
    assert all(t.date.year == year for t in terms)


def test_solar_terms_agree_with_the_holiday_package_in_this_century() -> None:
    import chinese_calendar

    for year in range(2000, 2084):
        theirs = chinese_calendar.get_solar_terms(D(year, 1, 1), D(year, 12, 31))
        assert [(o.date, o.name_zh) for o in solar_terms(year)] == theirs, year


@given(st.integers(1902, 2098))
def test_every_year_has_one_spring_festival_and_its_eve_the_day_before(year: int) -> None:
    festivals = lunar_festivals(year)
    spring = [f.date for f in festivals if f.name_zh == "春节"]
    eve = [f.date for f in festivals if f.name_zh == "除夕"]
    assert len(spring) == 1 and D(year, 1, 21) <= spring[0] <= D(year, 2, 20)
    assert eve == [spring[0] - dt.timedelta(days=1)]


def test_rhythm_around_an_occasion() -> None:
    holiday = Occasion(D(2026, 10, 1), "国庆节", "National Day", "holiday", D(2026, 10, 7))
    s = rhythm(holiday)
    assert s.pre_sale == (D(2026, 9, 24), D(2026, 9, 28))
    assert s.urgency == D(2026, 9, 30)
    assert s.follow_up == D(2026, 10, 10)  # three days after the last day off
    single = rhythm(Occasion(D(2026, 11, 11), "双11", "11.11", "shopping"))
    assert (single.urgency, single.follow_up) == (D(2026, 11, 10), D(2026, 11, 14))


def test_upcoming_suggestions_cross_the_new_year() -> None:
    found = list(upcoming(MarketingCalendar(), D(2026, 11, 29), days=40))
    names = [s.occasion.name_zh for s in found]
    assert names[:3] == ["双12", "平安夜", "圣诞节"]
    assert "元旦" in names  # 2027's, a shopping day while its holidays are unknown
    assert all(s.urgency >= D(2026, 11, 29) for s in found)

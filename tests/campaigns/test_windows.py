"""Quiet hours and send windows, at fixed clocks and against a minute-by-minute brute force."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.campaigns.windows import (
    PRESETS,
    QuietHours,
    Rules,
    SendWindow,
    WindowInvalid,
    due_time,
    intervals,
    next_allowed,
    parse_hhmm,
    preset,
    slots,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def sh(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SH)


def test_2059_sends_2100_waits_until_0800() -> None:
    rules = Rules()
    assert next_allowed(sh(2026, 11, 11, 20, 59), SH, rules) == sh(2026, 11, 11, 20, 59)
    assert next_allowed(sh(2026, 11, 11, 21, 0), SH, rules) == sh(2026, 11, 12, 8, 0)
    assert next_allowed(sh(2026, 11, 12, 3, 0), SH, rules) == sh(2026, 11, 12, 8, 0)
    assert next_allowed(sh(2026, 11, 12, 8, 0), SH, rules) == sh(2026, 11, 12, 8, 0)
    assert next_allowed(sh(2026, 11, 12, 7, 59, 59), SH, rules) == sh(2026, 11, 12, 8, 0)


def test_the_recipients_own_clock_decides() -> None:
    """10:00 in Shanghai is 21:00 the evening before in New York: one recipient may get the
    message now, the other waits for 08:00 New York time."""
    at = sh(2026, 11, 12, 10, 0)
    assert next_allowed(at, SH, Rules()) == at
    waits = next_allowed(at, NY, Rules())
    assert waits.astimezone(NY) == dt.datetime(2026, 11, 12, 8, 0, tzinfo=NY)


def test_windows_and_presets() -> None:
    evening = Rules(window=preset("ecommerce_evening"))
    assert next_allowed(sh(2026, 11, 11, 10, 0), SH, evening) == sh(2026, 11, 11, 19, 0)
    # The window ends where the quiet hours begin: 20:59 is the last minute.
    assert next_allowed(sh(2026, 11, 11, 20, 59), SH, evening) == sh(2026, 11, 11, 20, 59)
    assert next_allowed(sh(2026, 11, 11, 21, 0), SH, evening) == sh(2026, 11, 12, 19, 0)
    weekend = Rules(window=preset("education_weekend"))
    # Wednesday 2026-11-11 → Saturday 09:00.
    assert next_allowed(sh(2026, 11, 11, 9, 30), SH, weekend) == sh(2026, 11, 14, 9, 0)
    assert {name for name in PRESETS} >= {"catering_lunch", "ecommerce_evening"}
    with pytest.raises(WindowInvalid):
        preset("nightclub")


def test_a_window_inside_quiet_hours_never_opens() -> None:
    night = Rules(window=SendWindow(dt.time(22, 0), dt.time(23, 0)))
    with pytest.raises(WindowInvalid) as caught:
        next_allowed(sh(2026, 11, 11, 10, 0), SH, night)
    assert "没有允许发送的时间" in caught.value.message_zh


@pytest.mark.parametrize("bad", ["8:00", "25:00", "08:60", "0800", "", "ab:cd"])
def test_times_are_hh_mm(bad: str) -> None:
    with pytest.raises(WindowInvalid):
        parse_hhmm(bad)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(WindowInvalid):
        QuietHours.parse("08:00", "08:00")
    with pytest.raises(WindowInvalid):
        SendWindow(dt.time(10, 0), dt.time(10, 0))
    with pytest.raises(WindowInvalid):
        SendWindow(dt.time(10, 0), dt.time(11, 0), frozenset())
    assert parse_hhmm("24:00") == dt.time(0, 0)


zones = st.sampled_from(
    [SH, NY, ZoneInfo("Europe/London"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Australia/Lord_Howe")]
)
times = st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
instants = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31), timezones=st.just(UTC)
)


@st.composite
def rules(draw: st.DrawFn) -> Rules:
    start, end = draw(times), draw(times)
    if start == end:
        end = dt.time((start.hour + 9) % 24, start.minute)
    window = None
    if draw(st.booleans()):
        a, b = sorted([draw(times), draw(times)])
        if a != b:
            days = frozenset(draw(st.sets(st.integers(0, 6), min_size=1)))
            window = SendWindow(a, b, days)
    return Rules(QuietHours(start, end), window)


@settings(max_examples=60, deadline=None)
@given(instants, zones, rules())
def test_next_allowed_is_the_first_allowed_minute(
    at: dt.datetime, zone: ZoneInfo, r: Rules
) -> None:
    """Against a brute force over every minute of the next eight days: the answer is allowed,
    and no whole minute before it (after ``at``) is."""
    try:
        found = next_allowed(at, zone, r)
    except WindowInvalid:
        found = None
    minute = at.replace(second=0, microsecond=0)
    if minute < at:
        minute += dt.timedelta(minutes=1)
    if r.allowed(at.astimezone(zone)):
        assert found == at
        return
    probe = minute
    while probe < at + dt.timedelta(days=8):
        if r.allowed(probe.astimezone(zone)):
            assert found is not None and found <= probe
            break
        probe += dt.timedelta(minutes=1)
    else:
        assert found is None or found > at + dt.timedelta(days=8) - dt.timedelta(minutes=1)
        return
    assert found is not None and r.allowed(found.astimezone(zone)) and found >= at


@settings(max_examples=40, deadline=None)
@given(instants, zones, rules())
def test_intervals_cover_exactly_the_allowed_time(
    start: dt.datetime, zone: ZoneInfo, r: Rules
) -> None:
    spans = list(intervals(start, zone, r, days=3))
    for (a, b), (c, _) in itertools.pairwise(spans):
        assert a < b <= c
    step = dt.timedelta(minutes=7)
    probe = start.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while probe < start + dt.timedelta(days=3):
        inside = any(a <= probe < b for a, b in spans)
        assert inside == r.allowed(probe.astimezone(zone)), probe
        probe += step


def test_a_campaign_is_spread_over_its_windows_and_what_does_not_fit_is_said() -> None:
    lunch = Rules(window=preset("catering_lunch"))  # 30 minutes a day
    plan = slots(sh(2026, 11, 11, 9, 0), SH, lunch, rate=2.0, days=2)
    assert [(s.opens.astimezone(SH).hour, s.opens.astimezone(SH).minute) for s in plan] == [
        (10, 30),
        (10, 30),
    ]
    assert [s.capacity for s in plan] == [3600, 3600]
    assert due_time(0, plan, 2.0) == sh(2026, 11, 11, 10, 30)
    assert due_time(3599, plan, 2.0) == sh(2026, 11, 11, 10, 59, 59, 500000)
    assert due_time(3600, plan, 2.0) == sh(2026, 11, 12, 10, 30)
    assert due_time(7200, plan, 2.0) is None  # does not fit: carry on or expire
    with pytest.raises(WindowInvalid):
        slots(sh(2026, 11, 11, 9, 0), SH, lunch, rate=0, days=1)


def test_dst_days_keep_their_local_boundaries() -> None:
    # 2026-03-08: New York jumps from 02:00 to 03:00; the quiet hours still end at 08:00 local.
    at = dt.datetime(2026, 3, 8, 1, 0, tzinfo=NY)
    assert next_allowed(at, NY, Rules()).astimezone(NY) == dt.datetime(2026, 3, 8, 8, 0, tzinfo=NY)
    spans = list(intervals(at, NY, Rules(), days=1))
    assert (spans[0][1] - spans[0][0]) == dt.timedelta(hours=13)

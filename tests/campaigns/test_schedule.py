"""Campaign schedules: once, recurring member days and weekdays, and the rules that cannot run."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.campaigns.schedule import ScheduleInvalid, parse_schedule
from hongyan.errors import ValidationFailed

SH = "Asia/Shanghai"
NOW = dt.datetime(2026, 11, 11, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai, a Wednesday


def local(*args: int, zone: str = SH) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone))


def test_now_and_once() -> None:
    assert parse_schedule({"kind": "now"}, zone=SH, now=NOW).occurrences(NOW) == []
    once = parse_schedule({"kind": "at", "at": "2026-12-18T10:00"}, zone=SH, now=NOW)
    assert once.at == local(2026, 12, 18, 10, 0)  # a time without an offset is the tenant's
    assert once.occurrences(NOW) == [local(2026, 12, 18, 10, 0)]
    explicit = parse_schedule({"kind": "at", "at": "2026-12-18T10:00:00+00:00"}, zone=SH, now=NOW)
    assert explicit.at == dt.datetime(2026, 12, 18, 10, 0, tzinfo=dt.UTC)


def test_member_day_every_month_on_the_18th() -> None:
    s = parse_schedule(
        {"kind": "recurring", "every": "month", "day": 18, "time": "10:00"}, zone=SH, now=NOW
    )
    assert s.occurrences(NOW, 3) == [
        local(2026, 11, 18, 10, 0),
        local(2026, 12, 18, 10, 0),
        local(2027, 1, 18, 10, 0),
    ]
    assert s.next_run(local(2026, 11, 18, 10, 0)) == local(2026, 12, 18, 10, 0)


def test_every_friday_evening_keeps_its_wall_time_across_dst() -> None:
    ny = "America/New_York"
    now = local(2026, 3, 1, 12, 0, zone=ny)
    s = parse_schedule(
        {"kind": "recurring", "every": "week", "weekday": "fri", "time": "19:30"}, zone=ny, now=now
    )
    runs = s.occurrences(now, 3)
    assert [r.astimezone(ZoneInfo(ny)).strftime("%a %H:%M") for r in runs] == ["Fri 19:30"] * 3
    assert runs[1] - runs[0] == dt.timedelta(days=7, hours=-1)  # clocks sprang forward


def test_until_ends_a_recurring_schedule() -> None:
    s = parse_schedule(
        {"kind": "recurring", "every": "day", "time": "09:00", "until": "2026-11-13"},
        zone=SH,
        now=NOW,
    )
    assert s.occurrences(NOW, 10) == [local(2026, 11, 12, 9, 0), local(2026, 11, 13, 9, 0)]


def test_a_raw_rule() -> None:
    s = parse_schedule(
        {"kind": "recurring", "rule": "FREQ=YEARLY;BYMONTH=11;BYMONTHDAY=11", "time": "08:00"},
        zone=SH,
        now=NOW,
    )
    assert s.occurrences(NOW, 2) == [local(2027, 11, 11, 8, 0), local(2028, 11, 11, 8, 0)]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"kind": "at", "at": "2026-11-11T09:59"}, "已经过去"),
        ({"kind": "at", "at": "tomorrow"}, "不是有效的日期时间"),
        ({"kind": "sometimes"}, "未知的计划类型"),
        ({"kind": "recurring", "rule": "FREQ=MONTHLY;BYMONTH=2;BYMONTHDAY=30"}, "不会触发"),
        ({"kind": "recurring", "every": "day", "until": "2026-11-01"}, "不会触发"),
        ({"kind": "recurring", "rule": "FREQ=HOURLY"}, "最多每天重复一次"),
        ({"kind": "recurring", "rule": "FREQ=DAILY;BYHOUR=9,21"}, "每天一次"),
        ({"kind": "recurring", "rule": "FREQ=DAILY;UNTIL=20270101"}, "结束日期请单独填写"),
        ({"kind": "recurring", "rule": "FREQ=NEVERLY"}, "最多每天重复一次"),
        ({"kind": "recurring", "rule": "FREQ=WEEKLY;BYDAY=XX"}, "无效"),
        ({"kind": "recurring", "every": "week", "weekday": "funday"}, "星期几"),
        ({"kind": "recurring", "every": "month", "day": 32}, "1–31"),
        ({"kind": "recurring", "every": "day", "time": "25:00"}, "HH:MM"),
        ({"kind": "recurring"}, "重复周期"),
    ],
)
def test_schedules_that_cannot_run_are_refused(data: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_schedule(data, zone=SH, now=NOW)
    assert words in caught.value.message_zh


def test_unknown_zone() -> None:
    with pytest.raises(ScheduleInvalid):
        parse_schedule({"kind": "now"}, zone="Mars/Olympus", now=NOW)


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([SH, "America/New_York", "Europe/London"]),
    st.sampled_from(
        [
            {"every": "day"},
            {"every": "week", "weekday": "sat"},
            {"every": "month", "day": 31},
            {"every": "month", "day": -1},
            {"rule": "FREQ=MONTHLY;BYDAY=1MO"},
        ]
    ),
    st.times(),
    st.datetimes(
        min_value=dt.datetime(2026, 1, 1),
        max_value=dt.datetime(2030, 1, 1),
        timezones=st.just(dt.UTC),
    ),
)
def test_occurrences_are_increasing_future_and_at_the_local_time(
    zone: str, every: dict[str, Any], at: dt.time, now: dt.datetime
) -> None:
    at = at.replace(second=0, microsecond=0)
    s = parse_schedule({"kind": "recurring", "time": f"{at:%H:%M}", **every}, zone=zone, now=now)
    runs = s.occurrences(now, 6)
    assert len(runs) == 6 and runs[0] > now
    assert all(a < b for a, b in itertools.pairwise(runs))
    for r in runs:
        shown = r.astimezone(ZoneInfo(zone))
        # A wall time a DST change skips is the one exception: it moves by the gap.
        assert shown.time() == at or abs(shown.hour - at.hour) == 1

"""When a campaign runs: now, once at a time, or on a recurring rule (pure).

Recurring campaigns use RFC 5545 recurrence rules (``python-dateutil``), written by the console
from a few plain choices: every day, every week on a weekday, every month on a day of the month
(会员日: the 18th), or a raw rule for anything else. Occurrences are wall-clock times in the
tenant's zone (10:00 stays 10:00 across a DST change) stored as UTC. A rule must fire at most
once a day and at least once in the next ten years: one that never fires (30 February), one that
has run out, a time in the past, an unknown weekday: clear errors before anything is planned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from hongyan.campaigns.windows import parse_hhmm
from hongyan.errors import ValidationFailed

UTC = dt.UTC
HORIZON_YEARS = 10
WEEKDAYS = {
    "mon": "MO",
    "tue": "TU",
    "wed": "WE",
    "thu": "TH",
    "fri": "FR",
    "sat": "SA",
    "sun": "SU",
}
_ALLOWED_FREQ = {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}


class ScheduleInvalid(ValidationFailed):
    code = "schedule_invalid"


def _bad(en: str, zh: str) -> ScheduleInvalid:
    return ScheduleInvalid(f"Schedule: {en}", f"发送计划有误：{zh}")


@dataclass(frozen=True)
class Schedule:
    kind: Literal["now", "at", "recurring"]
    zone: str
    at: dt.datetime | None = None  # kind "at": the instant (UTC)
    rule: str | None = None  # kind "recurring": the RRULE, without DTSTART
    start: dt.datetime | None = None  # kind "recurring": first possible run (UTC)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "zone": self.zone}
        if self.at is not None:
            out["at"] = self.at.isoformat()
        if self.rule is not None:
            out["rule"] = self.rule
        if self.start is not None:
            out["start"] = self.start.isoformat()
        return out

    def occurrences(self, after: dt.datetime, limit: int = 10) -> list[dt.datetime]:
        """The next ``limit`` runs strictly after ``after`` (UTC)."""
        if self.kind == "now":
            return []
        if self.kind == "at":
            assert self.at is not None
            return [self.at] if self.at > after else []
        found: list[dt.datetime] = []
        rule = self._rrule()
        cursor = after.astimezone(ZoneInfo(self.zone))
        while len(found) < limit:
            nxt = rule.after(cursor)
            if nxt is None:
                break
            found.append(nxt.astimezone(UTC))
            cursor = nxt
        return found

    def next_run(self, after: dt.datetime) -> dt.datetime | None:
        runs = self.occurrences(after, 1)
        return runs[0] if runs else None

    def _rrule(self) -> rrule:
        assert self.rule is not None and self.start is not None
        zone = ZoneInfo(self.zone)
        start = self.start.astimezone(zone)
        text = self.rule
        keys = _keys(text)
        if "UNTIL" not in keys and "COUNT" not in keys:  # never search past the horizon
            bound = (start + dt.timedelta(days=366 * HORIZON_YEARS)).astimezone(UTC)
            text += f";UNTIL={bound:%Y%m%dT%H%M%S}Z"
        rule = rrulestr(text, dtstart=start)
        if not isinstance(rule, rrule):
            raise _bad("one rule only", "只能使用一条重复规则")
        return rule


def _keys(rule: str) -> dict[str, str]:
    parts = [p.split("=", 1) for p in rule.split(";") if p.strip()]
    return {k.strip().upper(): v.strip().upper() for k, v in (p for p in parts if len(p) == 2)}


def parse_schedule(data: Mapping[str, Any], *, zone: str, now: dt.datetime) -> Schedule:
    """A schedule from the API or the console, checked against ``now``.

    ``{"kind": "now"}``; ``{"kind": "at", "at": "2026-12-18T10:00:00+08:00"}`` (a local time
    without an offset is in ``zone``); ``{"kind": "recurring", "every": "month", "day": 18,
    "time": "10:00"}``, ``{"every": "week", "weekday": "fri", "time": "19:30"}``,
    ``{"every": "day", "time": "09:00"}`` or ``{"rule": "FREQ=…", "time": "10:00"}``; an
    optional ``"until"`` date ends a recurring one.
    """
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        raise _bad(f"unknown time zone {zone!r}", f"未知时区 {zone!r}") from None
    kind = data.get("kind", "now")
    if kind == "now":
        return Schedule("now", zone)
    if kind == "at":
        at = _instant(data.get("at"), tz)
        if at <= now:
            raise _bad(
                f"{at.isoformat()} is in the past", f"{at.astimezone(tz):%Y-%m-%d %H:%M} 已经过去"
            )
        return Schedule("at", zone, at=at)
    if kind != "recurring":
        raise _bad(f"unknown kind {kind!r}", f"未知的计划类型 {kind!r}")
    at_time = parse_hhmm(str(data.get("time", "10:00")), "time")
    rule = _rule_text(data)
    until = data.get("until")
    if until is not None:
        try:
            last = dt.date.fromisoformat(str(until))
        except ValueError:
            raise _bad(f"until {until!r} is not a date", f"结束日期 {until!r} 格式不正确") from None
        end = dt.datetime.combine(last, dt.time(23, 59, 59), tzinfo=tz).astimezone(UTC)
        rule += f";UNTIL={end:%Y%m%dT%H%M%S}Z"  # the end of that day in the tenant's zone
    local_now = now.astimezone(tz)
    start = dt.datetime.combine(local_now.date(), at_time, tzinfo=tz)
    schedule = Schedule("recurring", zone, rule=rule, start=start.astimezone(UTC))
    keys = _keys(rule)
    if keys.get("FREQ") not in _ALLOWED_FREQ:
        raise _bad("a campaign recurs at most once a day", "营销活动最多每天重复一次")
    if {"BYHOUR", "BYMINUTE", "BYSECOND", "BYSETPOS"} & set(keys):
        raise _bad("the send time is 'time', one a day", "发送时间请用 time 填写，每天一次")
    try:
        schedule._rrule()
    except (ValueError, TypeError) as exc:
        raise _bad(f"the rule {rule!r} is not valid ({exc})", f"重复规则 {rule!r} 无效") from None
    if schedule.next_run(now) is None:
        raise _bad(
            f"the rule {rule!r} never fires after now (within {HORIZON_YEARS} years)",
            f"重复规则 {rule!r} 在今后 {HORIZON_YEARS} 年内不会触发",
        )
    return schedule


def _rule_text(data: Mapping[str, Any]) -> str:
    every = data.get("every")
    if every == "day":
        return "FREQ=DAILY"
    if every == "week":
        weekday = str(data.get("weekday", "")).lower()[:3]
        if weekday not in WEEKDAYS:
            raise _bad(f"unknown weekday {data.get('weekday')!r}", "星期几不正确（mon … sun）")
        return f"FREQ=WEEKLY;BYDAY={WEEKDAYS[weekday]}"
    if every == "month":
        monthday = data.get("day")
        if not isinstance(monthday, int) or not (1 <= monthday <= 31 or -31 <= monthday <= -1):
            raise _bad("'day' must be a day of the month (1–31, -1 for the last)", "日期应为 1–31")
        return f"FREQ=MONTHLY;BYMONTHDAY={monthday}"
    raw = data.get("rule")
    if isinstance(raw, str) and raw.strip():
        text = raw.strip().removeprefix("RRULE:")
        if any(part.split("=")[0].upper() in ("DTSTART", "UNTIL") for part in text.split(";")):
            raise _bad("write 'until' as its own field", "结束日期请单独填写")
        return text
    raise _bad(
        "say 'every' (day, week, month) or give a 'rule'", "请选择重复周期（每天、每周、每月）"
    )


def _instant(value: object, zone: ZoneInfo) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise _bad(f"{value!r} is not a date and time", f"{value!r} 不是有效的日期时间") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    return at.astimezone(UTC)

"""Quiet hours and send windows: when a marketing message may reach the carrier (pure).

Marketing is never handed to a carrier inside the tenant's quiet hours (default 21:00–08:00)
in the recipient's local time; a message due then waits for the next allowed minute. A campaign
may also name a send window (the industry presets below, or the marketer's own): days of the
week and a time of day. Verification and notification messages are held by neither.

Times are compared in the recipient's zone (``zoneinfo``), so a campaign to two zones waits in
each for its own morning. A boundary time that a DST change skips is met once the clock has
jumped past it; an hour that repeats is taken at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from hongyan.errors import ValidationFailed

UTC = dt.UTC
ALL_DAYS = frozenset(range(7))  # Monday 0 … Sunday 6
WEEKEND = frozenset({5, 6})


class WindowInvalid(ValidationFailed):
    code = "send_window_invalid"


def parse_hhmm(value: str, what: str = "time") -> dt.time:
    """``"08:00"`` → time(8, 0); a clear error for anything else (``24:00`` means midnight)."""
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() and len(p) == 2 for p in parts):
        hour, minute = int(parts[0]), int(parts[1])
        if (hour, minute) == (24, 0):
            return dt.time(0, 0)
        if hour < 24 and minute < 60:
            return dt.time(hour, minute)
    raise WindowInvalid(f"{what} {value!r} is not HH:MM", f"{what} {value!r} 不是 HH:MM 格式的时间")


@dataclass(frozen=True)
class QuietHours:
    """[start, end) in local time; wraps midnight when end <= start (21:00–08:00)."""

    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)

    @classmethod
    def parse(cls, start: str, end: str) -> QuietHours:
        quiet = cls(parse_hhmm(start, "quiet_start"), parse_hhmm(end, "quiet_end"))
        if quiet.start == quiet.end:
            raise WindowInvalid(
                "Quiet hours that start when they end would forbid the whole day",
                "免打扰时段的开始和结束不能相同（那样全天都不能发送）",
            )
        return quiet

    def contains(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class SendWindow:
    """Days of the week and [start, end) of local time when a campaign may send."""

    start: dt.time
    end: dt.time
    days: frozenset[int] = ALL_DAYS
    name: str = ""

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise WindowInvalid(
                f"A send window must end after it starts ({self.start:%H:%M}–{self.end:%H:%M})",
                f"发送时段的结束时间必须晚于开始时间（{self.start:%H:%M}–{self.end:%H:%M}）",
            )
        if not self.days or not self.days <= ALL_DAYS:
            raise WindowInvalid("A send window needs at least one day", "发送时段至少要包含一天")

    def contains(self, local: dt.datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end

    @property
    def minutes(self) -> int:
        return (self.end.hour * 60 + self.end.minute) - (self.start.hour * 60 + self.start.minute)


# Industry presets (domain.md): defaults the marketer can change.
PRESETS: dict[str, tuple[SendWindow, str, str]] = {
    "catering_lunch": (
        SendWindow(dt.time(10, 30), dt.time(11, 0), name="catering_lunch"),
        "餐饮·午餐前",
        "Catering: before lunch",
    ),
    "catering_tea": (
        SendWindow(dt.time(14, 0), dt.time(15, 0), name="catering_tea"),
        "餐饮·下午茶前一小时",
        "Catering: an hour before afternoon tea",
    ),
    "ecommerce_evening": (
        SendWindow(dt.time(19, 0), dt.time(21, 0), name="ecommerce_evening"),
        "电商·晚间",
        "E-commerce: evening",
    ),
    "education_weekend": (
        SendWindow(dt.time(9, 0), dt.time(10, 0), WEEKEND, name="education_weekend"),
        "教育·周末上午",
        "Education: weekend mornings",
    ),
}


def preset(name: str) -> SendWindow:
    try:
        return PRESETS[name][0]
    except KeyError:
        raise WindowInvalid(
            f"Unknown send window preset {name!r}; known: {', '.join(PRESETS)}",
            f"未知的发送时段预设 {name!r}；可选：{', '.join(PRESETS)}",
        ) from None


@dataclass(frozen=True)
class Rules:
    """What holds a marketing message: the quiet hours, and the campaign's window if any."""

    quiet: QuietHours = QuietHours()
    window: SendWindow | None = None

    def allowed(self, local: dt.datetime) -> bool:
        if self.quiet.contains(local.time()):
            return False
        return self.window is None or self.window.contains(local)


def _minute(at: dt.datetime) -> dt.datetime:
    """``at`` rounded up to a whole minute (rules change on minutes)."""
    floor = at.replace(second=0, microsecond=0)
    return floor if floor == at else floor + dt.timedelta(minutes=1)


def _boundaries(rules: Rules) -> list[dt.time]:
    times = {dt.time(0, 0), rules.quiet.start, rules.quiet.end}
    if rules.window is not None:
        times |= {rules.window.start, rules.window.end}
    return sorted(times)


def next_allowed(
    at: dt.datetime, zone: ZoneInfo, rules: Rules, *, horizon_days: int = 8
) -> dt.datetime:
    """The first instant at or after ``at`` (aware) when ``rules`` let a marketing message go,
    in UTC. Rules change only on their boundary times, so only those are tried (and ``at``)."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    local = at.astimezone(zone)
    if rules.allowed(local):
        return at.astimezone(UTC)
    for offset in range(horizon_days + 1):
        day = local.date() + dt.timedelta(days=offset)
        for boundary in _boundaries(rules):
            candidate = _local_instant(day, boundary, zone)
            if candidate <= at:
                continue
            if rules.allowed(candidate.astimezone(zone)):
                return candidate.astimezone(UTC)
    raise WindowInvalid(
        f"No allowed sending time within {horizon_days} days",
        f"{horizon_days} 天内没有允许发送的时间",
    )


def _local_instant(day: dt.date, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The instant a wall clock in ``zone`` shows ``day`` ``at`` (PEP 495 ``fold=0``: a time
    that a DST change repeats is its first occurrence, one it skips lands after the gap)."""
    return dt.datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def intervals(
    start: dt.datetime, zone: ZoneInfo, rules: Rules, days: int
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """The allowed intervals [open, close) in UTC from ``start`` for ``days`` days, in order."""
    end = start + dt.timedelta(days=days)
    at = start
    while at < end:
        try:
            opened = next_allowed(at, zone, rules)
        except WindowInvalid:
            return
        if opened >= end:
            return
        closed = _next_forbidden(opened, zone, rules, end)
        yield opened, closed
        at = closed


def _next_forbidden(
    opened: dt.datetime, zone: ZoneInfo, rules: Rules, limit: dt.datetime
) -> dt.datetime:
    local = opened.astimezone(zone)
    for offset in range(9):
        day = local.date() + dt.timedelta(days=offset)
        for boundary in _boundaries(rules):
            candidate = _local_instant(day, boundary, zone)
            if candidate <= opened:
                continue
            if candidate >= limit:
                return limit
            if not rules.allowed(candidate.astimezone(zone)):
                return candidate.astimezone(UTC)
    return limit


@dataclass(frozen=True)
class Slot:
    """An allowed interval and how many messages it holds at the channel's rate."""

    opens: dt.datetime
    closes: dt.datetime
    capacity: int


def slots(start: dt.datetime, zone: ZoneInfo, rules: Rules, rate: float, days: int) -> list[Slot]:
    """The allowed intervals of the next ``days`` days with their capacity at ``rate`` per
    second: a campaign is spread over them in order (see :func:`due_times`)."""
    if rate <= 0:
        raise WindowInvalid("The sending rate must be positive", "发送速率必须大于 0")
    return [
        Slot(o, c, int((c - o).total_seconds() * rate))
        for o, c in intervals(_minute(start.astimezone(UTC)), zone, rules, days)
    ]


def due_time(index: int, plan: list[Slot], rate: float) -> dt.datetime | None:
    """When the ``index``-th message (0-based) of a spread campaign is due: slots fill in order
    at ``rate`` per second; None when the planned slots cannot hold it (it carries to a later
    window or expires, as the marketer chose)."""
    for slot in plan:
        if index < slot.capacity:
            return slot.opens + dt.timedelta(seconds=index / rate)
        index -= slot.capacity
    return None

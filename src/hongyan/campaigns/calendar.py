"""The marketing calendar: public holidays and adjusted working days, the 24 solar terms, lunar
festivals, shopping days, and the timing rhythm around each (pure, no I/O).

Public holidays (法定节假日) and the weekend days turned into working days around them (调休) are
set each year by the State Council's notice, usually published in November for the next year.
They come from the ``chinesecalendar`` package, which ships every year announced when it was
released, and from arrangements an operator loads from a data file (``hongyan calendar load``)
for a year the package does not know yet or to correct it. A date in a year that neither knows
raises :class:`CalendarUnknown`: the platform never guesses a holiday.

Solar terms (二十四节气) and lunar festivals are astronomy and arithmetic, known for any year
from 1901 to 2099: both from ``lunar_python``.

The rhythm (domain.md): pre-sale 3 to 7 days before an occasion, urgency the day before,
follow-up 3 days after (after the last day of a holiday period).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import chinese_calendar
from chinese_calendar import constants as official
from lunar_python import Lunar, LunarYear

from hongyan.errors import ValidationFailed

FIRST_YEAR, LAST_YEAR = 1901, 2099  # what the astronomical tables cover with a year either side

OccasionKind = Literal["holiday", "solar_term", "lunar_festival", "shopping"]
DayKind = Literal["holiday", "adjusted_workday", "weekend", "workday"]

# The statutory holidays, by the English name the package uses, with their Chinese names.
HOLIDAY_NAMES: dict[str, tuple[str, str]] = {
    h.value: (h.chinese, h.value) for h in official.Holiday
}
_BY_CHINESE = {zh: en for en, (zh, _) in HOLIDAY_NAMES.items()}

# Lunar festivals: (lunar month, day) → names; day 0 means the month's last day (除夕).
LUNAR_FESTIVALS: tuple[tuple[int, int, str, str], ...] = (
    (1, 1, "春节", "Spring Festival"),
    (1, 15, "元宵节", "Lantern Festival"),
    (2, 2, "龙抬头", "Dragon Raises Its Head"),
    (5, 5, "端午节", "Dragon Boat Festival"),
    (7, 7, "七夕", "Qixi (Chinese Valentine's Day)"),
    (8, 15, "中秋节", "Mid-Autumn Festival"),
    (9, 9, "重阳节", "Double Ninth Festival"),
    (12, 8, "腊八节", "Laba Festival"),
    (12, 23, "小年", "Little New Year"),
    (12, 0, "除夕", "New Year's Eve"),
)

# Shopping and consumer days Chinese marketers plan for, on fixed Gregorian dates.
SHOPPING_DAYS: tuple[tuple[int, int, str, str], ...] = (
    (1, 1, "元旦", "New Year's Day"),
    (2, 14, "情人节", "Valentine's Day"),
    (3, 8, "妇女节", "Women's Day"),
    (5, 20, "520", "520 (I love you)"),
    (6, 18, "618 年中大促", "618 mid-year sale"),
    (11, 11, "双11", "Singles' Day (11.11)"),
    (12, 12, "双12", "Double 12"),
    (12, 24, "平安夜", "Christmas Eve"),
    (12, 25, "圣诞节", "Christmas"),
)

PRE_SALE_FROM, PRE_SALE_TO = 7, 3  # days before
URGENCY = 1  # day before
FOLLOW_UP = 3  # days after


class CalendarUnknown(ValidationFailed):
    code = "calendar_unknown"
    message_en = "The public holidays of that year are not known yet"
    message_zh = "该年度的法定节假日安排尚未公布或未导入"


class ArrangementInvalid(ValidationFailed):
    code = "calendar_arrangement_invalid"


@dataclass(frozen=True)
class HolidayPeriod:
    """One holiday period of a year's arrangement: its days off and its adjusted working days."""

    name_zh: str
    name_en: str
    start: dt.date
    end: dt.date
    workdays: tuple[dt.date, ...] = ()

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": {"zh": self.name_zh, "en": self.name_en},
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "workdays": [d.isoformat() for d in self.workdays],
        }


@dataclass(frozen=True)
class Arrangement:
    """A year's official arrangement (the State Council's notice), and where it came from."""

    year: int
    periods: tuple[HolidayPeriod, ...]
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "source": self.source,
            "holidays": [p.as_dict() for p in self.periods],
        }


@dataclass(frozen=True)
class Occasion:
    date: dt.date
    name_zh: str
    name_en: str
    kind: OccasionKind
    end: dt.date | None = None  # the last day of a holiday period

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "date": self.date.isoformat(),
            "name": {"zh": self.name_zh, "en": self.name_en},
            "kind": self.kind,
        }
        if self.end is not None and self.end != self.date:
            out["end"] = self.end.isoformat()
        return out


@dataclass(frozen=True)
class Suggestion:
    """When to send around an occasion (the rhythm in domain.md)."""

    occasion: Occasion
    pre_sale: tuple[dt.date, dt.date]
    urgency: dt.date
    follow_up: dt.date

    def as_dict(self) -> dict[str, Any]:
        return {
            "occasion": self.occasion.as_dict(),
            "pre_sale": {"from": self.pre_sale[0].isoformat(), "to": self.pre_sale[1].isoformat()},
            "urgency": self.urgency.isoformat(),
            "follow_up": self.follow_up.isoformat(),
        }


@dataclass(frozen=True)
class DayInfo:
    date: dt.date
    kind: DayKind
    name_zh: str | None = None
    name_en: str | None = None

    @property
    def off(self) -> bool:
        return self.kind in ("holiday", "weekend")


# --------------------------------------------------------------------------- arrangements


def package_years() -> list[int]:
    """The years whose arrangement the installed ``chinesecalendar`` knows."""
    return sorted({d.year for d in official.holidays})


def package_arrangement(year: int) -> Arrangement | None:
    """The arrangement ``chinesecalendar`` ships for ``year``: the periods that end in it (the
    notice for 2024 holds 元旦 from 2023-12-30 to 2024-01-01)."""
    periods = tuple(p for p in _package_periods() if p.end.year == year)
    if not periods:
        return None
    version = getattr(chinese_calendar, "__version__", "?")
    return Arrangement(year, periods, f"chinesecalendar {version}")


@functools.cache
def _package_periods() -> tuple[HolidayPeriod, ...]:
    """Every holiday period the package knows, its days grouped and its 调休 days attached."""
    periods: list[list[Any]] = []
    for day, name in sorted(official.holidays.items()):
        last = periods[-1] if periods else None
        # The package lists some periods without the weekend inside them (端午 2012: Friday and
        # Sunday): days of one holiday with only an ordinary weekend between are one period.
        if last is not None and last[0] == name and _weekend_between(last[2], day):
            last[2] = day
        else:
            periods.append([name, day, day])
    # An adjusted working day belongs to the nearest period of its holiday, within 20 days (a
    # notice's 调休 days sit right before or after the period they pay for).
    owner: dict[int, list[dt.date]] = {}
    for day, name in official.workdays.items():
        near = [
            (_distance(day, start, end), i)
            for i, (n, start, end) in enumerate(periods)
            if n == name
        ]
        if near and min(near)[0] <= 20:
            owner.setdefault(min(near)[1], []).append(day)
    built = []
    for i, (name, start, end) in enumerate(periods):
        zh, en = HOLIDAY_NAMES.get(name, (name, name))
        built.append(HolidayPeriod(zh, en, start, end, tuple(sorted(owner.get(i, [])))))
    return tuple(built)


def _weekend_between(before: dt.date, after: dt.date) -> bool:
    gap = [before + dt.timedelta(days=i) for i in range(1, (after - before).days)]
    return all(d.weekday() >= 5 and d not in official.workdays for d in gap)


def _distance(day: dt.date, start: dt.date, end: dt.date) -> int:
    if day < start:
        return (start - day).days
    if day > end:
        return (day - end).days
    return 0


def parse_arrangement(data: Mapping[str, Any]) -> Arrangement:
    """An operator's arrangement file, checked: what the State Council's notice says.

    ``{"year": 2027, "source": "国办发明电〔2026〕…号", "holidays": [{"name": "春节",
    "start": "2027-02-05", "end": "2027-02-11", "workdays": ["2027-02-14"]}, …]}``. Names are the
    statutory holidays' (元旦 春节 清明 劳动节 端午 中秋 国庆节, in Chinese or English).
    """

    def bad(en: str, zh: str) -> ArrangementInvalid:
        return ArrangementInvalid(f"Holiday arrangement: {en}", f"节假日安排文件有误：{zh}")

    if not isinstance(data, Mapping):
        raise bad("the file must hold one JSON object", "文件内容应为一个 JSON 对象")
    year = data.get("year")
    if not isinstance(year, int) or not FIRST_YEAR <= year <= LAST_YEAR:
        raise bad(f"'year' must be a year in {FIRST_YEAR}..{LAST_YEAR}", "year 必须是有效年份")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise bad(
            "'source' must name the notice it comes from", "source 必须写明来源（国务院通知文号）"
        )
    items = data.get("holidays")
    if not isinstance(items, list) or not items:
        raise bad("'holidays' must list the holiday periods", "holidays 必须列出各个假期")
    periods: list[HolidayPeriod] = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise bad(f"holiday {n} is not an object", f"第 {n} 个假期格式不正确")
        raw_name = str(item.get("name", "")).strip()
        en = raw_name if raw_name in HOLIDAY_NAMES else _BY_CHINESE.get(raw_name)
        if en is None:
            known = "、".join(zh for zh, _ in HOLIDAY_NAMES.values())
            raise bad(
                f"holiday {n}: unknown name {raw_name!r}", f"第 {n} 个假期名称未知（可用：{known}）"
            )
        start = _date(item.get("start"), f"holiday {n} start", bad)
        end = _date(item.get("end"), f"holiday {n} end", bad)
        if end < start or (end - start).days > 14:
            raise bad(
                f"holiday {n}: end must follow start within 15 days", f"第 {n} 个假期起止日期有误"
            )
        if not (start.year == year or end.year == year):
            raise bad(f"holiday {n} is not in {year}", f"第 {n} 个假期不在 {year} 年")
        raw_workdays = item.get("workdays", [])
        if not isinstance(raw_workdays, list):
            raise bad(f"holiday {n}: workdays must be a list", f"第 {n} 个假期的调休上班日应为列表")
        workdays = tuple(sorted(_date(w, f"holiday {n} workday", bad) for w in raw_workdays))
        for w in workdays:
            if start <= w <= end or _distance(w, start, end) > 20:
                raise bad(
                    f"holiday {n}: workday {w} must be outside the period and near it",
                    f"第 {n} 个假期的调休上班日 {w} 应在假期之外且临近假期",
                )
        zh, en_name = HOLIDAY_NAMES[en]
        periods.append(HolidayPeriod(zh, en_name, start, end, workdays))
    periods.sort(key=lambda p: p.start)
    for a, b in itertools.pairwise(periods):
        if b.start <= a.end:
            raise bad(f"{a.name_en} and {b.name_en} overlap", f"{a.name_zh}与{b.name_zh}日期重叠")
    off = {p.start + dt.timedelta(days=i) for p in periods for i in range(p.days)}
    if any(w in off for p in periods for w in p.workdays):
        raise bad("a workday falls on another holiday", "调休上班日落在另一个假期内")
    return Arrangement(year, tuple(periods), source.strip())


def _date(value: object, what: str, bad: Any) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise bad(f"{what} {value!r} is not a date (YYYY-MM-DD)", f"{what} 不是日期") from None


# --------------------------------------------------------------------------- the calendar


@dataclass
class MarketingCalendar:
    """Holidays from the package and the operator's loaded arrangements (which win)."""

    loaded: Mapping[int, Arrangement] = field(default_factory=dict)

    def arrangement(self, year: int) -> Arrangement:
        found = self.loaded.get(year) or package_arrangement(year)
        if found is None:
            raise CalendarUnknown(
                f"The public holidays of {year} are not known: the installed data covers "
                f"{_span(self.known_years())}; load the State Council's arrangement with "
                "`hongyan calendar load FILE`",
                f"{year} 年的法定节假日尚不可知：现有数据覆盖 {_span(self.known_years())}；"
                "请用 hongyan calendar load 导入国务院公布的安排",
                details={"year": year, "known": self.known_years()},
            )
        return found

    def known_years(self) -> list[int]:
        return sorted(set(package_years()) | set(self.loaded))

    def day(self, date: dt.date) -> DayInfo:
        """What kind of day ``date`` is; CalendarUnknown for a year nobody announced yet."""
        for year in (date.year, date.year - 1, date.year + 1):
            try:
                arrangement = self.arrangement(year)
            except CalendarUnknown:
                if year == date.year:
                    raise
                continue
            for p in arrangement.periods:
                if p.start <= date <= p.end:
                    return DayInfo(date, "holiday", p.name_zh, p.name_en)
                if date in p.workdays:
                    return DayInfo(date, "adjusted_workday", p.name_zh, p.name_en)
        return DayInfo(date, "weekend" if date.weekday() >= 5 else "workday")

    def occasions(self, year: int) -> tuple[list[Occasion], bool]:
        """Every occasion of the year, in date order, and whether its holidays are known."""
        found: list[Occasion] = []
        known = True
        try:
            arrangement = self.arrangement(year)
        except CalendarUnknown:
            known = False
        else:
            found += [
                Occasion(p.start, p.name_zh, p.name_en, "holiday", p.end)
                for p in arrangement.periods
            ]
        holidays = {o.name_zh for o in found}
        found += solar_terms(year) + lunar_festivals(year)
        found += [o for o in shopping_days(year) if o.name_zh not in holidays]  # 元旦 once
        return sorted(found, key=lambda o: (o.date, o.kind)), known

    def year(self, year: int) -> dict[str, Any]:
        """The whole year as data, for `hongyan calendar` and the API."""
        _check_year(year)
        occasions, known = self.occasions(year)
        out: dict[str, Any] = {"year": year, "holidays_known": known}
        if known:
            out["arrangement"] = self.arrangement(year).as_dict()
        else:
            out["holidays_unknown"] = {
                "en": f"not announced or not loaded; known years: {_span(self.known_years())}",
                "zh": f"尚未公布或未导入；已知年份：{_span(self.known_years())}",
            }
        out["occasions"] = [o.as_dict() for o in occasions]
        out["suggestions"] = [
            rhythm(o).as_dict() for o in occasions if o.kind in ("holiday", "shopping")
        ]
        return out


def _span(years: list[int]) -> str:
    return f"{years[0]}–{years[-1]}" if years else "none"


def _check_year(year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValidationFailed(
            f"The calendar covers {FIRST_YEAR}..{LAST_YEAR}",
            f"日历支持 {FIRST_YEAR}–{LAST_YEAR} 年",
        )


# --------------------------------------------------------------------------- astronomy


def solar_terms(year: int) -> list[Occasion]:
    """The 24 solar terms of the Gregorian year (dates in China's time zone).

    Computed by ``lunar_python`` (astronomical). ``chinesecalendar``'s own table was not used:
    it puts 立秋 on August 27–29 in every year before 2000 (it is August 7–8), which the
    ordering test caught; from 2000 to 2083 the two agree day for day (a test holds them to it).
    """
    _check_year(year)
    english = dict(zip(_TERMS_ZH, _TERMS_EN, strict=True))
    found: dict[str, dt.date] = {}
    for lunar_year in (year - 1, year, year + 1):
        for name, solar in Lunar.fromYmd(lunar_year, 1, 1).getJieQiTable().items():
            if name not in english:  # the table also names next year's first terms in pinyin
                continue
            day = dt.date(solar.getYear(), solar.getMonth(), solar.getDay())
            if day.year == year:
                found.setdefault(name, day)
    return sorted(
        (Occasion(d, name, english[name], "solar_term") for name, d in found.items()),
        key=lambda o: o.date,
    )


def lunar_festivals(year: int) -> list[Occasion]:
    """The lunar festivals that fall in the Gregorian year ``year``."""
    _check_year(year)
    found = []
    for lunar_year in (year - 1, year):
        for month, day, zh, en in LUNAR_FESTIVALS:
            if day == 0:
                day = abs(LunarYear.fromYear(lunar_year).getMonth(month).getDayCount())
            solar = Lunar.fromYmd(lunar_year, month, day).getSolar()
            date = dt.date(solar.getYear(), solar.getMonth(), solar.getDay())
            if date.year == year:
                found.append(Occasion(date, zh, en, "lunar_festival"))
    return sorted(found, key=lambda o: o.date)


def shopping_days(year: int) -> list[Occasion]:
    _check_year(year)
    return [Occasion(dt.date(year, m, d), zh, en, "shopping") for m, d, zh, en in SHOPPING_DAYS]


def rhythm(occasion: Occasion) -> Suggestion:
    """Pre-sale 7 to 3 days before, urgency the day before, follow-up 3 days after its end."""
    start, end = occasion.date, occasion.end or occasion.date
    return Suggestion(
        occasion,
        (start - dt.timedelta(days=PRE_SALE_FROM), start - dt.timedelta(days=PRE_SALE_TO)),
        start - dt.timedelta(days=URGENCY),
        end + dt.timedelta(days=FOLLOW_UP),
    )


def upcoming(calendar: MarketingCalendar, today: dt.date, days: int = 60) -> Iterable[Suggestion]:
    """Suggestions whose pre-sale starts within ``days`` of ``today`` (for the scheduler)."""
    horizon = today + dt.timedelta(days=days)
    for year in range(today.year, horizon.year + 1):
        occasions, _ = calendar.occasions(year)
        for o in occasions:
            if o.kind not in ("holiday", "shopping"):
                continue
            s = rhythm(o)
            if today <= s.urgency and s.pre_sale[0] <= horizon:
                yield s


_TERMS_ZH = (
    "小寒",
    "大寒",
    "立春",
    "雨水",
    "惊蛰",
    "春分",
    "清明",
    "谷雨",
    "立夏",
    "小满",
    "芒种",
    "夏至",
    "小暑",
    "大暑",
    "立秋",
    "处暑",
    "白露",
    "秋分",
    "寒露",
    "霜降",
    "立冬",
    "小雪",
    "大雪",
    "冬至",
)
_TERMS_EN = (
    "Minor Cold",
    "Major Cold",
    "Start of Spring",
    "Rain Water",
    "Awakening of Insects",
    "Spring Equinox",
    "Pure Brightness",
    "Grain Rain",
    "Start of Summer",
    "Grain Buds",
    "Grain in Ear",
    "Summer Solstice",
    "Minor Heat",
    "Major Heat",
    "Start of Autumn",
    "End of Heat",
    "White Dew",
    "Autumn Equinox",
    "Cold Dew",
    "Frost's Descent",
    "Start of Winter",
    "Minor Snow",
    "Major Snow",
    "Winter Solstice",
)

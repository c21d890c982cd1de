"""Lifecycle stages and RFM: the rules as pure functions, the same rules as SQL expressions.

**Lifecycle** (:func:`stage`), evaluated against a clock with the tenant's thresholds (days),
first match wins:

1. ``new``: first seen (the earlier of registration and first order) within ``new_days``;
2. ``active``: an order within ``active_days``;
3. ``lost``: no interaction at all (any event) for more than ``lost_days``;
4. ``dormant``: has ordered, but not for more than ``dormant_days``;
5. ``lapsing``: has ordered, last order between ``active_days`` and ``dormant_days`` ago;
6. ``potential``: browsed, favourited or carted, never ordered;
7. ``none``: no behaviour known (an imported list without events).

**RFM** (:func:`quantile_scores`): over the tenant's buyers (at least one order), each of
recency (the last order's time: later is better), frequency (orders) and monetary (revenue in
fen) is scored 1–5 by quantile: a buyer's score is ``1 + floor(5 × L / N)``, where ``N`` is the
number of buyers and ``L`` the number of buyers with a strictly *lower* value. So the bottom
fifth scores 1 and the top fifth 5, and equal values always get equal scores: a tie sits in the
fifth where its first member falls. Contacts who never ordered have no scores.

**Cut points** (:func:`cut_points`): the same scores follow from four values per dimension.
With the buyers' values sorted ascending (``v[0] ≤ … ≤ v[N − 1]``), a score is at least ``k``
(2–5) exactly when the value is above ``v[⌈(k − 1)N / 5⌉ − 1]``: ``1 + floor(5L / N) ≥ k`` ⇔
``L ≥ ⌈(k − 1)N / 5⌉ =: q`` ⇔ at least ``q`` values are strictly lower ⇔ the ``q``-th smallest
is strictly lower. So a tenant keeps 12 cut points (:class:`Cuts`) and the sums of the scores
(the means, exactly: a dimension's sum is ``N`` plus, per cut, the values above it,
:func:`score_sum`), and a score is a ``CASE`` on the aggregate (:func:`score_sql`), evaluated
when a rule, a sample or a report reads it. A group too: with a mean (or a split) the lowest
*high* score is a whole number ``h``, and a dimension is high exactly when its value is above
the cut of ``h`` (:meth:`Cuts.high_at`).

**Groups** (:func:`group`): each score is *high* when it is above the split point of its
dimension: by default the mean score of the tenant's buyers (high = strictly above the mean),
or a threshold the tenant sets (high = at or above it, e.g. 4). The eight classic groups:

=====  =====  =====  ==================  =========================
R      F      M      group               代码
=====  =====  =====  ==================  =========================
high   high   high   重要价值客户         ``important_value``
high   low    high   重要发展客户         ``important_develop``
low    high   high   重要保持客户         ``important_keep``
low    low    high   重要挽留客户         ``important_retain``
high   high   low    一般价值客户         ``general_value``
high   low    low    一般发展客户         ``general_develop``
low    high   low    一般保持客户         ``general_keep``
low    low    low    一般挽留客户         ``general_retain``
=====  =====  =====  ==================  =========================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from hongyan.db.types import UTCDateTime
from hongyan.errors import ValidationFailed

GROUP_OF: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "important_value",
    (True, False, True): "important_develop",
    (False, True, True): "important_keep",
    (False, False, True): "important_retain",
    (True, True, False): "general_value",
    (True, False, False): "general_develop",
    (False, True, False): "general_keep",
    (False, False, False): "general_retain",
}
GROUP_NAMES = {
    "important_value": ("重要价值客户", "Important value"),
    "important_develop": ("重要发展客户", "Important to develop"),
    "important_keep": ("重要保持客户", "Important to keep"),
    "important_retain": ("重要挽留客户", "Important to win back"),
    "general_value": ("一般价值客户", "General value"),
    "general_develop": ("一般发展客户", "General to develop"),
    "general_keep": ("一般保持客户", "General to keep"),
    "general_retain": ("一般挽留客户", "General to win back"),
}
STAGE_NAMES = {
    "potential": ("潜在客户", "Potential"),
    "new": ("新客户", "New"),
    "active": ("活跃客户", "Active"),
    "lapsing": ("待唤醒客户", "Lapsing"),
    "dormant": ("沉睡客户", "Dormant"),
    "lost": ("流失客户", "Lost"),
    "none": ("暂无行为", "No behaviour"),
}
# The order of the funnel: from first interest to gone.
FUNNEL = ("potential", "new", "active", "lapsing", "dormant", "lost")


@dataclass(frozen=True)
class Thresholds:
    new_days: int = 30
    active_days: int = 30
    dormant_days: int = 90
    lost_days: int = 180

    def check(self) -> Thresholds:
        values = (self.new_days, self.active_days, self.dormant_days, self.lost_days)
        if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 3650 for v in values):
            raise ValidationFailed(
                "Lifecycle thresholds are whole days from 1 to 3650",
                "生命周期阈值须为 1–3650 的整数天数",
            )
        if not self.active_days <= self.dormant_days <= self.lost_days:
            raise ValidationFailed(
                "Lifecycle thresholds must satisfy active ≤ dormant ≤ lost",
                "生命周期阈值须满足：活跃 ≤ 沉睡 ≤ 流失",
            )
        return self


@dataclass(frozen=True)
class Splits:
    """Where a score turns high, per dimension: None = above the buyers' mean score."""

    r: float | None = None
    f: float | None = None
    m: float | None = None

    def check(self) -> Splits:
        for v in (self.r, self.f, self.m):
            if v is not None and (isinstance(v, bool) or not 1 <= v <= 5):
                raise ValidationFailed(
                    "An RFM split is a score from 1 to 5 (or empty for the mean)",
                    "RFM 分界须为 1–5 的分数（留空表示取平均值）",
                )
        return self


# -- pure --------------------------------------------------------------------------------------


def stage(activity: Mapping[str, Any] | None, now: datetime, t: Thresholds) -> str:
    """The lifecycle stage of a contact's aggregates (``contact_activity`` columns) at ``now``."""
    if activity is None:
        return "none"
    first = [v for v in (activity.get("registered_at"), activity.get("first_order_at")) if v]
    if first and min(first) >= now - timedelta(days=t.new_days):
        return "new"
    last_order = activity.get("last_order_at")
    if last_order is not None and last_order >= now - timedelta(days=t.active_days):
        return "active"
    last_seen = activity.get("last_interaction_at")
    if last_seen is not None and last_seen < now - timedelta(days=t.lost_days):
        return "lost"
    if (activity.get("orders_count") or 0) > 0:
        if last_order is not None and last_order < now - timedelta(days=t.dormant_days):
            return "dormant"
        return "lapsing"
    if any(activity.get(k) for k in ("last_browse_at", "last_favourite_at", "last_cart_at")):
        return "potential"
    return "none"


def quantile_scores(values: Sequence[Any]) -> list[int]:
    """1–5 per value: ``1 + floor(5 × (values strictly lower) / N)`` (ties share a score)."""
    n = len(values)
    order = sorted(values)
    from bisect import bisect_left

    return [1 + (5 * bisect_left(order, v)) // n for v in values]


def cut_positions(n: int) -> tuple[int, int, int, int]:
    """The 1-based positions in ascending order whose values are the cuts of scores 2–5:
    ``⌈(k − 1)n / 5⌉`` for k = 2…5 (``n`` ≥ 1)."""
    return tuple(-(-(k - 1) * n // 5) for k in range(2, 6))  # type: ignore[return-value]


def cut_points(values: Sequence[Any]) -> tuple[Any, Any, Any, Any]:
    """The cuts of scores 2–5 of the buyers' ``values`` (see the module's "Cut points")."""
    order = sorted(values)
    return tuple(order[q - 1] for q in cut_positions(len(order)))


def cut_above_ascending(q: int, n: int, window: Sequence[Any]) -> tuple[Any, int | None]:
    """The cut at 1-based position ``q`` of ``n`` sorted values and how many values are above
    it, from ``window``: the values at positions ``q``, ``q + 1``, … (ascending, at least one).
    The count is ``n − (q − 1 + ties)``, ``ties`` the run of values equal to the cut that starts
    at ``q``; None when the window is all that run and stops before the end (the caller counts
    ``value > cut`` instead)."""
    cut = window[0]
    ties = 1
    while ties < len(window) and window[ties] == cut:
        ties += 1
    if ties < len(window) or q - 1 + len(window) >= n:
        return cut, n - (q - 1 + ties)
    return cut, None


def cut_above_descending(
    q: int, n: int, window: Sequence[Any], *, top: bool
) -> tuple[Any, int | None]:
    """The same from above: ``window`` holds the values at positions …, ``q + 1``, ``q`` in
    descending order (it ends with the cut); ``top``: every value before the window is above
    the cut (the window starts at the top, or where a seek past greater values began). The
    values above the cut are the ``n − q`` after position ``q`` less those equal to it; None
    when every value of the window equals the cut and ``top`` is false."""
    cut = window[-1]
    ties = 0
    while ties < len(window) - 1 and window[-2 - ties] == cut:
        ties += 1
    if ties < len(window) - 1 or top:
        return cut, n - q - ties
    return cut, None


def cuts_from_counts(
    counts: Sequence[tuple[Any, int]],
) -> tuple[int, tuple[Any, ...], tuple[int, ...]]:
    """From (value, how many) in ascending order of value: the number of values, the cuts of
    scores 2–5 and, per cut, how many values are above it (the buyers scoring at least 2…5)."""
    n = sum(k for _v, k in counts)
    cuts, above = [], []
    for q in cut_positions(n):
        seen = 0
        for v, k in counts:
            seen += k
            if seen >= q:
                cuts.append(v)
                above.append(n - seen)
                break
    return n, tuple(cuts), tuple(above)


def score_sum(n: int, above: Sequence[int]) -> int:
    """The sum of ``n`` buyers' scores on a dimension from the counts above its four cuts: each
    buyer scores 1 plus one per cut it is above."""
    return n + sum(above)


def score_at(value: Any, cuts: Sequence[Any]) -> int:
    """A buyer's score from the cuts of 2–5: one more for each cut the value is above."""
    return 1 + sum(1 for c in cuts if value > c)


def lowest_high(split: float | None, score_sum: int, n: int) -> int:
    """The lowest score (1–6; 6: none) that is *high*: above the mean ``score_sum / n``
    (strictly), or at least the split."""
    if split is None:
        return min(6, max(1, score_sum // n + 1))  # s > sum / n ⇔ s ≥ floor(sum / n) + 1
    return min(6, max(1, math.ceil(split)))


@dataclass(frozen=True)
class Cuts:
    """A tenant's RFM as of its last recompute: ``n`` buyers, per dimension the cuts of scores
    2–5 (recency as times, frequency as orders, monetary as fen) and the sum of the buyers'
    scores (the mean is ``sum / n``)."""

    n: int
    r: tuple[Any, Any, Any, Any]
    f: tuple[int, int, int, int]
    m: tuple[int, int, int, int]
    sums: tuple[int, int, int]
    computed_at: datetime | None = None

    def of(self, dim: str) -> tuple[Any, ...]:
        return {"r": self.r, "f": self.f, "m": self.m}[dim]

    @property
    def means(self) -> tuple[float, float, float]:
        return tuple(float(Fraction(s, self.n)) for s in self.sums)  # type: ignore[return-value]

    def high_at(self, dim: str, splits: Splits) -> int:
        i = "rfm".index(dim)
        return lowest_high((splits.r, splits.f, splits.m)[i], self.sums[i], self.n)


def group_at(r: int, f: int, m: int, cuts: Cuts, splits: Splits) -> str:
    """:func:`group` with the exact means of ``cuts`` (no float comparison)."""
    return GROUP_OF[
        (r >= cuts.high_at("r", splits), f >= cuts.high_at("f", splits),
         m >= cuts.high_at("m", splits))
    ]  # fmt: skip


def high(score: int, split: float | None, mean: float) -> bool:
    return score > mean if split is None else score >= split


def group(r: int, f: int, m: int, splits: Splits, means: tuple[float, float, float]) -> str:
    return GROUP_OF[
        (high(r, splits.r, means[0]), high(f, splits.f, means[1]), high(m, splits.m, means[2]))
    ]


# -- the same in SQL ---------------------------------------------------------------------------


def _at(value: datetime) -> Any:
    return sa.literal(value, UTCDateTime)


class _Earliest(sa.sql.functions.FunctionElement[Any]):
    """The earlier of two times, either of which may be NULL (NULL when both are)."""

    type = UTCDateTime()
    name = "earliest"
    inherit_cache = True


@compiles(_Earliest)
def _earliest_case(element: _Earliest, compiler: Any, **kw: Any) -> str:
    x, y = list(element.clauses)
    return str(
        compiler.process(sa.case((x.is_(None), y), (y.is_(None), x), (x < y, x), else_=y), **kw)
    )


@compiles(_Earliest, "postgresql")
def _earliest_least(element: _Earliest, compiler: Any, **kw: Any) -> str:
    # PostgreSQL's LEAST skips NULLs (SQLite's min() does not): one call instead of a CASE
    return f"LEAST({compiler.process(element.clauses, **kw)})"


def stage_sql(
    a: Any,
    now: datetime,
    t: Thresholds,
    codes: Mapping[str, int] | None = None,
    *,
    outer: bool = True,
) -> Any:
    """:func:`stage` as a ``CASE`` over the columns of ``a`` (``contact_activity`` or an alias,
    outer-joined: a contact without a row is ``none``; ``outer=False`` when every row is one
    of ``a``'s). With ``codes``, the stage's number in it instead of its name (a pass that only
    counts hashes a small integer)."""
    first_seen = _Earliest(a.c.registered_at, a.c.first_order_at)

    def label(name: str) -> Any:
        return name if codes is None else sa.literal_column(str(codes[name]))

    whens: list[Any] = [(a.c.contact_id.is_(None), label("none"))] if outer else []
    return sa.case(
        *whens,
        (first_seen >= _at(now - timedelta(days=t.new_days)), label("new")),
        (a.c.last_order_at >= _at(now - timedelta(days=t.active_days)), label("active")),
        (a.c.last_interaction_at < _at(now - timedelta(days=t.lost_days)), label("lost")),
        (
            sa.and_(
                a.c.orders_count > 0,
                a.c.last_order_at < _at(now - timedelta(days=t.dormant_days)),
            ),
            label("dormant"),
        ),
        (a.c.orders_count > 0, label("lapsing")),
        (
            sa.or_(
                a.c.last_browse_at.is_not(None),
                a.c.last_favourite_at.is_not(None),
                a.c.last_cart_at.is_not(None),
            ),
            label("potential"),
        ),
        else_=label("none"),
    )


# The aggregate each dimension is scored on (columns of contact_activity).
DIMENSIONS = {"r": "last_order_at", "f": "orders_count", "m": "revenue_fen"}


def _cut(a: Any, dim: str, value: Any) -> Any:
    col = a.c[DIMENSIONS[dim]]
    return sa.literal(value, col.type)


def buyer_sql(a: Any) -> sa.ColumnElement[bool]:
    """Has ordered: true or false, never NULL (an outer-joined missing row is false)."""
    # 0 written out, not bound: the predicate of the buyers' indexes (migration 0017) must
    # appear as it is for SQLite (and PostgreSQL) to use them
    return sa.and_(a.c.last_order_at.is_not(None), a.c.orders_count > sa.literal_column("0"))


def score_sql(a: Any, dim: str, cuts: Cuts | None) -> Any:
    """A contact's score on ``dim`` (1–5; NULL for a non-buyer or before any recompute) as a
    ``CASE`` on its aggregate, the cuts bound as parameters."""
    if cuts is None:
        return sa.null()
    col = a.c[DIMENSIONS[dim]]
    whens: list[Any] = [(sa.not_(buyer_sql(a)), sa.null())]
    for k in range(5, 1, -1):
        whens.append((col > _cut(a, dim, cuts.of(dim)[k - 2]), k))
    return sa.case(*whens, else_=1)


def high_sql(a: Any, dim: str, cuts: Cuts, splits: Splits) -> sa.ColumnElement[bool]:
    """A buyer's ``dim`` is high: a plain comparison of the aggregate with one cut."""
    h = cuts.high_at(dim, splits)
    if h > 5:
        return sa.false()
    if h <= 1:
        return sa.true()
    return a.c[DIMENSIONS[dim]] > _cut(a, dim, cuts.of(dim)[h - 2])


def group_is_sql(a: Any, name: str, cuts: Cuts | None, splits: Splits) -> sa.ColumnElement[bool]:
    """The contact is a buyer in the group ``name``: comparisons of aggregates with cuts (no
    ``CASE``, so a planner estimates it from the columns' statistics)."""
    if cuts is None:
        return sa.false()
    (br, bf, bm) = next(k for k, v in GROUP_OF.items() if v == name)
    tests: list[Any] = [buyer_sql(a)]
    for dim, want in zip("rfm", (br, bf, bm), strict=True):
        h = high_sql(a, dim, cuts, splits)
        tests.append(h if want else sa.not_(h))
    return sa.and_(*tests)


def group_sql(a: Any, cuts: Cuts | None, splits: Splits) -> Any:
    """A contact's group name (NULL for a non-buyer or before any recompute) as a ``CASE``."""
    if cuts is None:
        return sa.null()
    hr, hf, hm = (high_sql(a, d, cuts, splits) for d in "rfm")
    whens: list[Any] = [(sa.not_(buyer_sql(a)), sa.null())]
    for (br, bf, bm), name in GROUP_OF.items():
        whens.append(
            (
                sa.and_(
                    hr if br else sa.not_(hr), hf if bf else sa.not_(hf), hm if bm else sa.not_(hm)
                ),
                name,
            )
        )
    return sa.case(*whens)

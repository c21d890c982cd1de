"""Recipients in their own time zones: a launch is planned per zone, set-based.

Most contacts have no zone of their own (``contacts.time_zone`` is NULL: the tenant's zone
applies); those that have one (given in an import or through the API, or derived from a foreign
number that has exactly one zone) are read in one index-only scan (``ix_contacts_time_zone``).
A launch groups its recipients by zone, keeping their order within each group, and gives every
group its own :class:`~hongyan.campaigns.materialise.Spread` over the quiet hours and the window
*in that zone*, at its share of the channel's rate (the groups send side by side, so together
they keep to the rate). :class:`ZonedSpread` answers :meth:`Spread.times` for the whole
grouped order, so materialisation writes every batch as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from functools import cache
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from hongyan.campaigns.materialise import Spread
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contacts

MIN_GROUP_RATE = 1.0  # messages a second a small zone group gets at least


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def own_zones(conn: Connection, tenant_id: int) -> dict[int, str]:
    """The tenant's contacts that have a time zone of their own, with it."""
    c = contacts.c
    rows = conn.execute(
        TenantScope(tenant_id).select(contacts, c.id, c.time_zone).where(c.time_zone.is_not(None))
    ).all()
    return {int(i): str(z) for i, z in rows}


class ZonedSpread(Spread):
    """Due and expiry times for an order grouped by zone (see the module doc): a
    :class:`Spread` to materialisation, made of one per group."""

    def __init__(self, parts: list[tuple[int, Spread]]) -> None:  # Spread's own state: unused
        self.parts = parts  # (first index of the group in the order, its spread), in order

    @property
    def first(self) -> dt.datetime:
        return min(s.first for _, s in self.parts)

    def times(self, start: int, n: int) -> list[tuple[dt.datetime, dt.datetime] | None]:
        out: list[tuple[dt.datetime, dt.datetime] | None] = []
        end = start + n
        for k, (offset, spread) in enumerate(self.parts):
            stop = self.parts[k + 1][0] if k + 1 < len(self.parts) else end
            lo, hi = max(start, offset), min(end, stop)
            if lo < hi:
                out += spread.times(lo - offset, hi - lo)
        return out


def plan(
    order: Sequence[tuple[int, str]],
    zones: dict[int, str],
    default: str,
    rate: float,
    make: Callable[[ZoneInfo, float, int], Spread],
) -> tuple[list[tuple[int, str]], Spread]:
    """``order`` grouped by each contact's zone (the tenant's ``default`` first, then by name),
    and the spread that times it: ``make(zone, rate, total)`` builds one group's spread."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for item in order:
        groups.setdefault(zones.get(item[0], default), []).append(item)
    if len(groups) <= 1:
        name = next(iter(groups), default)
        return list(order), make(zone(name), rate, len(order))
    total = len(order)
    grouped: list[tuple[int, str]] = []
    parts: list[tuple[int, Spread]] = []
    for name in sorted(groups, key=lambda z: (z != default, z)):
        members = groups[name]
        share = max(rate * len(members) / total, min(rate, MIN_GROUP_RATE))
        parts.append((len(grouped), make(zone(name), share, len(members))))
        grouped += members
    return grouped, ZonedSpread(parts)


def firsts(names: set[str], default: str, make: Callable[[ZoneInfo], Spread]) -> dt.datetime:
    """The earliest first allowed minute over the zones (the caps' reference time ``T``: the
    earliest keeps the count conservative)."""
    return min(make(zone(n)).first for n in {default, *names})

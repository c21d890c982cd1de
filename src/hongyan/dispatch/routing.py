"""Which channel carries a message: the tenant's route, the number's carrier, failover (pure).

A tenant's route is the most specific of its rows that matches the message: (lane, carrier),
then (lane, any carrier), then (any lane, carrier), then (any lane, any carrier). Without one,
every enabled channel that reaches the carrier is a candidate, lowest priority first. Channels
that cannot reach the number's carrier are dropped from either list. Among the candidates the
first ready one is used, except that a message whose last attempt failed transiently on a
channel tries the others first (failover), and comes back to that channel only when nothing
else is ready.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from hongyan.channels.base import ChannelSpec
from hongyan.channels.service import Route
from hongyan.dispatch.states import Lane


def route_for(routes: Sequence[Route], lane: Lane, carrier: str | None) -> Route | None:
    """The tenant's most specific route row for a lane and carrier."""
    wanted = carrier or "intl"
    best: tuple[int, Route] | None = None
    for r in routes:
        if r.lane not in (-1, int(lane)) or r.carrier not in ("*", wanted):
            continue
        rank = (2 if r.lane != -1 else 0) + (1 if r.carrier != "*" else 0)
        if best is None or rank > best[0]:
            best = (rank, r)
    return best[1] if best else None


def candidates(
    specs: Sequence[ChannelSpec], routes: Sequence[Route], lane: Lane, carrier: str | None
) -> list[str]:
    """Channel names in the order to try them."""
    by_name = {s.name: s for s in specs if s.enabled}
    route = route_for(routes, lane, carrier)
    if route is not None:
        names = [n for n in route.channels if n in by_name]
    else:
        names = [s.name for s in sorted(by_name.values(), key=lambda s: (s.priority, s.name))]
    return [n for n in names if by_name[n].reaches(carrier)]


def choose(names: Sequence[str], ready: Collection[str], failed_on: str | None) -> str | None:
    """The channel to use now, or None when no candidate is ready."""
    order = [n for n in names if n != failed_on]
    if failed_on is not None and failed_on in names:
        order.append(failed_on)
    return next((n for n in order if n in ready), None)

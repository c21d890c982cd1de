"""Routing (pure): the tenant's most specific route, the carrier filter, failover order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels.base import CARRIERS, ChannelSpec
from hongyan.channels.service import Route
from hongyan.dispatch.routing import candidates, choose, route_for
from hongyan.dispatch.states import Lane

NAMES = ("a", "b", "c", "d", "e")
CARRIER_OR_NONE = st.sampled_from((*CARRIERS, None))


def spec(name: str, *, carriers: tuple[str, ...] = (), enabled: bool = True, priority: int = 100):
    return ChannelSpec(
        name=name,
        kind="smpp",
        carriers=frozenset(carriers),
        enabled=enabled,
        priority=priority,
    )


@st.composite
def specs_st(draw: st.DrawFn) -> list[ChannelSpec]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    return [
        spec(
            n,
            carriers=tuple(draw(st.sets(st.sampled_from(CARRIERS), max_size=3))),
            enabled=draw(st.booleans()),
            priority=draw(st.integers(0, 3)),
        )
        for n in names
    ]


@st.composite
def routes_st(draw: st.DrawFn) -> list[Route]:
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from((-1, *map(int, Lane))), st.sampled_from(("*", *CARRIERS))),
            unique=True,
            max_size=8,
        )
    )
    channel_names = st.lists(st.sampled_from((*NAMES, "gone")), unique=True, max_size=4)
    return [Route(7, lane, carrier, tuple(draw(channel_names))) for lane, carrier in keys]


def reference_route(routes: list[Route], lane: Lane, carrier: str | None) -> Route | None:
    """The specification, written out: the first row found in order of specificity."""
    wanted = carrier or "intl"
    for key in ((int(lane), wanted), (int(lane), "*"), (-1, wanted), (-1, "*")):
        for r in routes:
            if (r.lane, r.carrier) == key:
                return r
    return None


# -- route_for ------------------------------------------------------------------------------------


@given(routes_st(), st.sampled_from(Lane), CARRIER_OR_NONE)
def test_the_most_specific_route_row_wins(
    routes: list[Route], lane: Lane, carrier: str | None
) -> None:
    assert route_for(routes, lane, carrier) == reference_route(routes, lane, carrier)


@given(routes_st(), st.sampled_from(Lane), CARRIER_OR_NONE)
def test_the_route_found_matches_lane_and_carrier(
    routes: list[Route], lane: Lane, carrier: str | None
) -> None:
    found = route_for(routes, lane, carrier)
    if found is None:
        assert all(
            r.lane not in (-1, int(lane)) or r.carrier not in ("*", carrier or "intl")
            for r in routes
        )
    else:
        assert found.lane in (-1, int(lane))
        assert found.carrier in ("*", carrier or "intl")


def test_route_specificity_worked_example() -> None:
    anything = Route(1, -1, "*", ("default",))
    any_lane_cmcc = Route(1, -1, "cmcc", ("cm-any",))
    marketing = Route(1, int(Lane.MARKETING), "*", ("mkt",))
    marketing_cmcc = Route(1, int(Lane.MARKETING), "cmcc", ("mkt-cm",))
    rows = [anything, any_lane_cmcc, marketing, marketing_cmcc]
    for order in (rows, rows[::-1]):
        assert route_for(order, Lane.MARKETING, "cmcc") == marketing_cmcc
        assert route_for(order, Lane.MARKETING, "cucc") == marketing
        assert route_for(order, Lane.NOTIFICATION, "cmcc") == any_lane_cmcc
        assert route_for(order, Lane.VERIFICATION, "ctcc") == anything
    # The lane outranks the carrier: (marketing, any) beats (any lane, cmcc).
    assert route_for([any_lane_cmcc, marketing], Lane.MARKETING, "cmcc") == marketing
    assert route_for([], Lane.MARKETING, "cmcc") is None
    assert route_for([marketing], Lane.NOTIFICATION, "cmcc") is None


def test_no_carrier_is_routed_as_intl() -> None:
    intl = Route(1, -1, "intl", ("abroad",))
    cmcc = Route(1, -1, "cmcc", ("cm",))
    assert route_for([cmcc, intl], Lane.NOTIFICATION, None) == intl
    assert route_for([cmcc, intl], Lane.NOTIFICATION, "intl") == intl
    assert route_for([cmcc], Lane.NOTIFICATION, None) is None


# -- candidates -----------------------------------------------------------------------------------


@given(specs_st(), routes_st(), st.sampled_from(Lane), CARRIER_OR_NONE)
def test_candidates_are_enabled_channels_that_reach_the_carrier(
    specs: list[ChannelSpec], routes: list[Route], lane: Lane, carrier: str | None
) -> None:
    by_name = {s.name: s for s in specs}
    names = candidates(specs, routes, lane, carrier)
    assert len(names) == len(set(names))
    for n in names:
        assert n in by_name  # never a channel that does not exist (a route's "gone")
        assert by_name[n].enabled
        assert by_name[n].reaches(carrier)
        wanted = carrier or "intl"
        assert not by_name[n].carriers or wanted in by_name[n].carriers


@given(specs_st(), routes_st(), st.sampled_from(Lane), CARRIER_OR_NONE)
def test_candidates_follow_the_route_or_the_priorities(
    specs: list[ChannelSpec], routes: list[Route], lane: Lane, carrier: str | None
) -> None:
    by_name = {s.name: s for s in specs}
    usable = {s.name for s in specs if s.enabled and s.reaches(carrier)}
    route = reference_route(routes, lane, carrier)
    got = candidates(specs, routes, lane, carrier)
    if route is not None:
        # Exactly the route's channels that can be used, in the route's order; no fallback to
        # a less specific row or to the operator's priorities.
        assert got == [n for n in route.channels if n in usable]
    else:
        assert got == sorted(usable, key=lambda n: (by_name[n].priority, n))


def test_candidates_worked_example() -> None:
    specs = [
        spec("cheap", priority=10, carriers=("cmcc", "cucc")),
        spec("every", priority=20),
        spec("telecom", priority=5, carriers=("ctcc",)),
        spec("off", priority=1, enabled=False),
        spec("abroad", priority=30, carriers=("intl",)),
    ]
    # No route: every enabled channel that reaches the carrier, lowest priority first.
    assert candidates(specs, [], Lane.MARKETING, "cmcc") == ["cheap", "every"]
    assert candidates(specs, [], Lane.MARKETING, "ctcc") == ["telecom", "every"]
    assert candidates(specs, [], Lane.MARKETING, "cbn") == ["every"]
    assert candidates(specs, [], Lane.MARKETING, "intl") == ["every", "abroad"]
    assert candidates(specs, [], Lane.MARKETING, None) == ["every", "abroad"]
    # A route names its channels in failover order; disabled / unreachable ones drop out.
    route = Route(1, -1, "*", ("off", "telecom", "every", "cheap", "removed"))
    assert candidates(specs, [route], Lane.MARKETING, "cmcc") == ["every", "cheap"]
    assert candidates(specs, [route], Lane.MARKETING, "ctcc") == ["telecom", "every"]
    # A route whose channels cannot carry the number leaves no candidate at all.
    only_off = Route(1, int(Lane.MARKETING), "*", ("off", "abroad"))
    assert candidates(specs, [route, only_off], Lane.MARKETING, "cmcc") == []
    assert candidates(specs, [route, only_off], Lane.NOTIFICATION, "cmcc") == ["every", "cheap"]
    assert candidates([], [], Lane.MARKETING, "cmcc") == []


def test_priority_ties_are_broken_by_name() -> None:
    specs = [spec("zeta", priority=1), spec("alpha", priority=1), spec("mid", priority=0)]
    assert candidates(specs, [], Lane.NOTIFICATION, "cmcc") == ["mid", "alpha", "zeta"]


# -- choose ---------------------------------------------------------------------------------------

names_st = st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES))


@given(names_st, st.sets(st.sampled_from((*NAMES, "x"))), st.none() | st.sampled_from(NAMES))
def test_choose_returns_a_ready_candidate_or_none(
    names: list[str], ready: set[str], failed_on: str | None
) -> None:
    got = choose(names, ready, failed_on)
    ready_candidates = [n for n in names if n in ready]
    if not ready_candidates:
        assert got is None
        return
    assert got in names and got in ready  # never a non-candidate, never one not ready
    others = [n for n in ready_candidates if n != failed_on]
    # The channel that failed comes last; otherwise the first ready one in order.
    assert got == (others[0] if others else failed_on)


def test_choose_worked_examples() -> None:
    assert choose(["a", "b", "c"], {"a", "b", "c"}, None) == "a"
    assert choose(["a", "b", "c"], {"b", "c"}, None) == "b"
    assert choose(["a", "b", "c"], {"a", "b", "c"}, "a") == "b"
    assert choose(["a", "b", "c"], {"a", "c"}, "a") == "c"
    assert choose(["a", "b", "c"], {"a"}, "a") == "a"  # back to it when nothing else is ready
    assert choose(["a", "b"], {"a", "b"}, "z") == "a"  # failed on a channel no longer a candidate
    assert choose(["a", "b"], {"z"}, None) is None  # ready, but not a candidate
    assert choose(["a", "b"], set(), "a") is None
    assert choose([], {"a"}, None) is None


@pytest.mark.parametrize("carrier", [*CARRIERS, None])
def test_a_channel_without_carriers_reaches_every_carrier(carrier: str | None) -> None:
    assert spec("all").reaches(carrier)
    assert spec("cm", carriers=("cmcc",)).reaches(carrier) == (carrier == "cmcc")

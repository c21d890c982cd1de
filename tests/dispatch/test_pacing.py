"""Pacing (pure given ``now``): a channel's rate shared by dispatchers, spent by a token bucket."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.dispatch.pacing import TokenBucket, share

EPS = 1e-6

rates = st.floats(min_value=0.5, max_value=5000, allow_nan=False)
bursts = st.none() | st.floats(min_value=1, max_value=50, allow_nan=False)
# Gaps between successive takes: many at the same instant, some short, some long pauses.
gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(0, 0.01), st.floats(0, 2)), min_size=1, max_size=300
)


def run(bucket: TokenBucket, start: float, steps: list[float]) -> list[tuple[float, float]]:
    """(take time, use time) of one take after each gap."""
    out, now = [], start
    for gap in steps:
        now += gap
        out.append((now, now + bucket.delay(now)))
    return out


def assert_paced(uses: list[float], rate: float, burst: float) -> None:
    """No window of uses holds more than ``burst`` plus what ``rate`` earns over the window."""
    uses = sorted(uses)
    for i, j in itertools.combinations_with_replacement(range(len(uses)), 2):
        count = j - i + 1
        assert count <= burst + rate * (uses[j] - uses[i]) + EPS, (i, j, uses[i], uses[j])


# -- share ----------------------------------------------------------------------------------------


@given(st.floats(min_value=0.001, max_value=1e6), st.integers(1, 1000))
def test_the_live_dispatchers_together_never_exceed_the_rate(rate: float, live: int) -> None:
    part = share(rate, live)
    assert part > 0
    assert part * live == pytest.approx(rate)


@given(st.floats(max_value=0, allow_nan=False), st.integers(-5, 50))
def test_no_rate_means_no_limit_whatever_the_number_of_dispatchers(rate: float, live: int) -> None:
    assert share(rate, live) == 0.0


@pytest.mark.parametrize("live", [0, -1, 1])
def test_a_dispatcher_that_sees_nobody_alive_takes_the_whole_rate(live: int) -> None:
    assert share(200, live) == 200


def test_share_worked_examples() -> None:
    assert share(200, 2) == 100
    assert share(200, 3) == pytest.approx(66.6667, rel=1e-4)
    assert share(0, 4) == 0


# -- the token bucket -----------------------------------------------------------------------------


@given(rates, bursts, gaps, st.floats(0, 1e6))
def test_the_long_run_rate_never_exceeds_rate_beyond_the_burst(
    rate: float, burst: float | None, steps: list[float], start: float
) -> None:
    bucket = TokenBucket(rate, burst, now=start)
    taken = run(bucket, start, steps)
    for at, use in taken:
        assert use >= at  # a delay is never negative
    assert_paced([use for _, use in taken], rate, bucket.burst)
    # And over the whole run, counted from the first take.
    assert len(taken) <= bucket.burst + rate * (taken[-1][1] - taken[0][0]) + EPS


@given(rates, bursts, st.integers(1, 400), st.floats(0, 1e6))
def test_takes_at_one_instant_are_spaced_exactly_one_token_apart(
    rate: float, burst: float | None, n: int, start: float
) -> None:
    """Not slower than it must be either: the k-th take waits only for the tokens it lacks."""
    bucket = TokenBucket(rate, burst, now=start)
    for k in range(1, n + 1):
        wait = bucket.delay(start)
        assert wait == pytest.approx(max(0.0, (k - bucket.burst) / rate), abs=1e-9, rel=1e-9)


@given(rates, bursts, st.floats(0, 1e6), st.floats(0, 1e4))
def test_an_idle_bucket_saves_at_most_its_burst(
    rate: float, burst: float | None, start: float, idle: float
) -> None:
    bucket = TokenBucket(rate, burst, now=start)
    bucket.delay(start)
    at = start + idle
    immediate = 0
    while bucket.delay(at) == 0:
        immediate += 1
        assert immediate <= bucket.burst + EPS
    assert immediate >= min(bucket.burst, 1 + idle * rate) - 1 - EPS


def test_bucket_worked_example() -> None:
    bucket = TokenBucket(10, now=100.0)  # burst max(1, 10/10) = 1
    assert bucket.burst == 1
    assert bucket.delay(100.0) == 0
    assert bucket.delay(100.0) == pytest.approx(0.1)
    assert bucket.delay(100.0) == pytest.approx(0.2)
    assert bucket.delay(100.25) == pytest.approx(0.05)  # owes 2 tokens less 2.5 earned, plus 1
    assert bucket.delay(110.0) == 0  # a long pause refills to the burst, never beyond
    assert bucket.delay(110.0) == pytest.approx(0.1)
    big = TokenBucket(1000, now=0.0)  # burst 100
    assert [big.delay(0.0) for _ in range(100)] == [0.0] * 100
    assert big.delay(0.0) == pytest.approx(0.001)


@given(
    st.floats(max_value=0, allow_nan=False),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=200),
)
def test_rate_zero_never_waits(rate: float, times: list[float]) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert all(bucket.delay(t) == 0.0 for t in times)


@given(rates, gaps, gaps, st.floats(0, 1e6), rates)
def test_set_rate_mid_way_paces_at_the_new_rate(
    rate: float, before: list[float], after: list[float], start: float, new_rate: float
) -> None:
    bucket = TokenBucket(rate, now=start)
    first = run(bucket, start, before)
    changed_at = first[-1][0]
    bucket.set_rate(new_rate, now=changed_at)
    assert bucket.rate == new_rate
    assert bucket.tokens <= bucket.burst  # nothing saved beyond the new burst
    second = run(bucket, changed_at, after)
    assert_paced([use for _, use in second], new_rate, bucket.burst)
    # What was owed under the old rate is still owed: the new phase starts with at most a burst.
    assert len(second) <= bucket.burst + new_rate * (second[-1][1] - changed_at) + EPS


def test_set_rate_worked_example() -> None:
    bucket = TokenBucket(100, now=0.0)  # burst 10
    for _ in range(10):
        assert bucket.delay(0.0) == 0
    bucket.set_rate(50, now=0.0)  # a second dispatcher came up: half the rate, burst 5
    assert bucket.burst == 5
    assert bucket.delay(0.0) == pytest.approx(0.02)
    bucket.set_rate(0, now=1.0)  # no limit any more
    assert all(bucket.delay(1.0) == 0 for _ in range(1000))
    bucket.set_rate(10, now=2.0)  # limited again: whatever was saved, at most the new burst
    assert bucket.burst == 1
    assert bucket.delay(2.0) == 0
    assert bucket.delay(2.0) == pytest.approx(0.1)


def test_a_clock_that_steps_back_takes_no_tokens_away() -> None:
    bucket = TokenBucket(10, burst=5, now=100.0)
    assert bucket.delay(50.0) == 0  # earlier than the bucket was made: still 4 tokens left
    assert [bucket.delay(100.0) for _ in range(4)] == [0.0] * 4
    assert bucket.delay(100.0) == pytest.approx(0.1)


def test_take_sleeps_for_the_delay() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(500, burst=1)  # a token every 2 ms
        started = time.monotonic()
        for _ in range(11):
            await bucket.take()
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert elapsed >= 0.015  # ten waits of 2 ms (asyncio may wake a little early)
    assert elapsed < 2

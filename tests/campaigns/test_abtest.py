"""A/B assignment and the decision rules, against exact values and simulated experiments."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.campaigns.abtest import (
    MIX_PRIME,
    AbTestInvalid,
    VariantResult,
    assign,
    decide,
    mix,
    plan_split,
    probability_best,
    two_proportion_p,
    wilson,
)


@given(
    st.lists(st.integers(1, 2**40), min_size=50, max_size=400, unique=True),
    st.integers(0, 2**31),
    st.integers(2, 5),
)
def test_assignment_is_balanced_deterministic_and_total(ids: list[int], salt: int, k: int) -> None:
    split = plan_split(len(ids), k, 0.04)
    first = assign(ids, salt, split)
    assert first == assign(list(reversed(ids)), salt, split)  # order of the audience is irrelevant
    counts = Counter(v for v in first.values() if v is not None)
    assert set(counts) == set(range(k)) and max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == split.test_size
    assert sum(v is None for v in first.values()) == len(ids) - split.test_size


def test_mix_fits_sqlite_integers_and_spreads_consecutive_ids() -> None:
    assert (MIX_PRIME - 1) * 1_103_515_245 + MIX_PRIME < 2**63
    ranks = sorted(range(1, 10_001), key=lambda c: mix(c, 42))
    split = plan_split(10_000, 2, 0.05)
    chosen = assign(list(range(1, 10_001)), 42, split)
    test_ids = [c for c, v in chosen.items() if v is not None]
    # Consecutive ids (a sorted import) do not all land in one variant or in the test group.
    assert min(test_ids) < 2_000 and max(test_ids) > 8_000
    assert ranks[:5] != [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("audience", "k", "share"),
    [(100, 1, 0.01), (100, 6, 0.01), (100, 2, 0.0), (100, 2, 0.6), (3, 3, 0.5)],
)
def test_impossible_splits(audience: int, k: int, share: float) -> None:
    with pytest.raises(AbTestInvalid):
        plan_split(audience, k, share)


def test_wilson_matches_the_textbook() -> None:
    low, high = wilson(81, 263, 0.95)  # Wilson (1927) via Newcombe (1998), example: 0.2553–0.3662
    assert abs(low - 0.2553) < 5e-4 and abs(high - 0.3662) < 5e-4
    assert wilson(0, 0) == (0.0, 1.0)


def test_two_proportion_p_matches_a_hand_computation() -> None:
    # 120/1000 against 90/1000: pooled 0.105, se 0.013711, z 2.1880, one-sided p 0.01434.
    p = two_proportion_p(VariantResult("a", 1000, 120), VariantResult("b", 1000, 90))
    assert abs(p - 0.01434) < 2e-4


def _simulate(rates: list[float], n: int, seed: int) -> list[VariantResult]:
    rng = random.Random(seed)
    return [
        VariantResult(f"v{i}", n, sum(rng.random() < r for _ in range(n)))
        for i, r in enumerate(rates)
    ]


@pytest.mark.parametrize("method", ["frequentist", "bayesian"])
def test_a_planted_better_variant_wins_and_equal_ones_do_not(method: str) -> None:
    """Across 20 simulated tests of 4,000 messages a variant: the 8 % variant against two 5 %
    ones is found nearly always, and three equal variants rarely give a false winner (the
    confidence bounds it)."""
    found = sum(
        decide(_simulate([0.05, 0.08, 0.05], 4000, s), "click_rate", method).winner == "v1"  # type: ignore[arg-type]
        for s in range(20)
    )
    false = sum(
        decide(_simulate([0.05, 0.05, 0.05], 4000, 100 + s), "click_rate", method).winner
        is not None  # type: ignore[arg-type]
        for s in range(20)
    )
    assert found >= 19 and false <= 2


def test_no_decision_on_too_little_data_and_reasons_in_both_languages() -> None:
    d = decide([VariantResult("a", 50, 10), VariantResult("b", 50, 1)], "conversion_rate")
    assert d.winner is None and "100" in d.reason and "100" in d.reason_zh
    assert [e.name for e in d.estimates] == ["a", "b"]
    with pytest.raises(AbTestInvalid):
        decide([VariantResult("a", 500, 10)], "click_rate")


def test_revenue_per_message() -> None:
    rng = random.Random(3)

    def spend(n: int, chance: float, mean: float) -> VariantResult:
        values = [rng.expovariate(1 / mean) if rng.random() < chance else 0.0 for _ in range(n)]
        return VariantResult("x", n, total=sum(values), total_squares=sum(v * v for v in values))

    a, b = spend(3000, 0.05, 100.0), spend(3000, 0.05, 160.0)
    a = VariantResult("a", a.trials, total=a.total, total_squares=a.total_squares)
    b = VariantResult("b", b.trials, total=b.total, total_squares=b.total_squares)
    d = decide([a, b], "revenue_per_message")
    assert d.winner == "b"
    est = {e.name: e for e in d.estimates}
    assert est["a"].low < est["a"].value < est["a"].high


def test_probability_best_is_reproducible_and_sums_to_one() -> None:
    results = _simulate([0.1, 0.12], 500, 9)
    first = probability_best(results, "click_rate")
    assert first == probability_best(results, "click_rate")
    assert abs(sum(first) - 1) < 1e-9

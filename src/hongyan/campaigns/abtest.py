"""A/B tests: who gets which variant, and whether the difference is real (pure).

**Assignment.** Every contact of the audience gets a pseudo-random rank from a keyed mix of
its id and the test's salt (:func:`mix`, integer arithmetic that SQLite and PostgreSQL compute
the same way, so the campaign planner can order by it in one ``INSERT … SELECT``). The first
``k × per_variant`` ranks form the test group and variant ``rank mod k`` goes to each: the groups
differ in size by at most one, and a contact keeps its variant however often the test is
planned again. The remaining ranks wait for the winner.

**Deciding.** The metric is a proportion (delivery, click or conversion rate: successes of
trials) or revenue per message (a mean). The variant with the best observed value wins when it
beats every other one:

* ``frequentist``: a one-sided two-proportion z-test (pooled) for rates, Welch's z for means,
  each at ``1 − (1 − confidence) / (k − 1)`` (Bonferroni over the k − 1 comparisons);
* ``bayesian``: the posterior probability that it is the best is at least ``confidence``
  (Beta(1 + successes, 1 + failures) for rates; normal posteriors of the means otherwise),
  estimated from 10,000 samples with a fixed seed, so the same data give the same answer.

Otherwise no winner is declared: the marketer waits longer or chooses. Every variant's value is
shown with its interval (Wilson score for rates, normal for means).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from hongyan.errors import ValidationFailed

MIX_PRIME = 2_147_483_647  # 2^31 − 1: products stay below 2^62 on SQLite's 64-bit integers
MIX_MULTIPLIER = 1_103_515_245
MAX_VARIANTS = 5

Metric = Literal["delivery_rate", "click_rate", "conversion_rate", "revenue_per_message"]
Method = Literal["frequentist", "bayesian"]
PROPORTIONS = ("delivery_rate", "click_rate", "conversion_rate")


class AbTestInvalid(ValidationFailed):
    code = "ab_test_invalid"


def mix(contact_id: int, salt: int) -> int:
    """The contact's rank key in a test: ``((id mod p) × m + salt) mod p``."""
    return ((contact_id % MIX_PRIME) * MIX_MULTIPLIER + salt % MIX_PRIME) % MIX_PRIME


@dataclass(frozen=True)
class Split:
    variants: int
    per_variant: int  # contacts per variant in the test phase

    @property
    def test_size(self) -> int:
        return self.variants * self.per_variant


def plan_split(audience: int, variants: int, share: float) -> Split:
    """How many contacts each variant gets in the test phase: ``share`` of the audience each
    (1 % is usual), at least one, and the test group never the whole audience."""
    if not 2 <= variants <= MAX_VARIANTS:
        raise AbTestInvalid(
            f"An A/B test has 2 to {MAX_VARIANTS} variants",
            f"A/B 测试需要 2 到 {MAX_VARIANTS} 个版本",
        )
    if not 0 < share <= 0.5:
        raise AbTestInvalid(
            "Each variant's share is above 0 and at most 50 %", "每个版本的比例应在 0 到 50% 之间"
        )
    per = max(1, round(audience * share))
    if per * variants >= audience:
        raise AbTestInvalid(
            f"An audience of {audience} is too small for {variants} variants at {share:.1%} each",
            f"受众 {audience} 人太少，无法按每版本 {share:.1%} 做 {variants} 个版本的测试",
        )
    return Split(variants, per)


def assign(contact_ids: Sequence[int], salt: int, split: Split) -> dict[int, int | None]:
    """Variant index per contact (None: waits for the winner), as the planner's SQL does it."""
    ranked = sorted(contact_ids, key=lambda c: (mix(c, salt), c))
    return {
        c: (rank % split.variants if rank < split.test_size else None)
        for rank, c in enumerate(ranked)
    }


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class VariantResult:
    """What one variant did: successes of trials for a rate; for revenue per message, the sum
    and the sum of squares of each message's revenue over ``trials`` messages."""

    name: str
    trials: int
    successes: int = 0
    total: float = 0.0
    total_squares: float = 0.0


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float
    low: float
    high: float
    trials: int


@dataclass(frozen=True)
class Decision:
    winner: str | None
    confidence: float  # how sure we are the winner is best (1 − p, or P(best))
    method: Method
    metric: Metric
    estimates: tuple[Estimate, ...]
    reason: str  # why (no) winner, in English; reason_zh in Chinese
    reason_zh: str


_NORMAL = NormalDist()


def _z(level: float) -> float:
    """The standard normal quantile."""
    return _NORMAL.inv_cdf(level)


def normal_cdf(x: float) -> float:
    return _NORMAL.cdf(x)


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    z = _z(1 - (1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p(better: VariantResult, other: VariantResult) -> float:
    """One-sided p-value that ``better``'s rate exceeds ``other``'s (pooled z-test)."""
    n1, n2 = better.trials, other.trials
    if n1 == 0 or n2 == 0:
        return 1.0
    p1, p2 = better.successes / n1, other.successes / n2
    pooled = (better.successes + other.successes) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0 if p1 <= p2 else 0.0
    return 1 - normal_cdf((p1 - p2) / spread)


def _mean_var(v: VariantResult) -> tuple[float, float]:
    if v.trials == 0:
        return 0.0, 0.0
    mean = v.total / v.trials
    var = max(0.0, v.total_squares / v.trials - mean * mean) * v.trials / max(1, v.trials - 1)
    return mean, var


def mean_p(better: VariantResult, other: VariantResult) -> float:
    """One-sided p-value that ``better``'s mean exceeds ``other``'s (Welch, normal)."""
    (m1, v1), (m2, v2) = _mean_var(better), _mean_var(other)
    if better.trials < 2 or other.trials < 2:
        return 1.0
    spread = math.sqrt(v1 / better.trials + v2 / other.trials)
    if spread == 0:
        return 1.0 if m1 <= m2 else 0.0
    return 1 - normal_cdf((m1 - m2) / spread)


def estimate(v: VariantResult, metric: Metric, confidence: float = 0.95) -> Estimate:
    if metric in PROPORTIONS:
        low, high = wilson(v.successes, v.trials, confidence)
        value = v.successes / v.trials if v.trials else 0.0
        return Estimate(v.name, value, low, high, v.trials)
    mean, var = _mean_var(v)
    half = _z(1 - (1 - confidence) / 2) * math.sqrt(var / v.trials) if v.trials else math.inf
    return Estimate(v.name, mean, mean - half, mean + half, v.trials)


def probability_best(
    results: Sequence[VariantResult], metric: Metric, *, draws: int = 10_000, seed: int = 7
) -> list[float]:
    """Posterior probability that each variant is the best (Monte Carlo, fixed seed)."""
    rng = random.Random(seed)  # noqa: S311 - simulation, reproducible on purpose
    wins = [0] * len(results)
    if metric in PROPORTIONS:
        params = [(1 + r.successes, 1 + r.trials - r.successes) for r in results]
        for _ in range(draws):
            samples = [rng.betavariate(a, b) for a, b in params]
            wins[samples.index(max(samples))] += 1
    else:
        moments = []
        for r in results:
            mean, var = _mean_var(r)
            moments.append((mean, math.sqrt(var / r.trials) if r.trials else 1e9))
        for _ in range(draws):
            samples = [rng.gauss(m, s) for m, s in moments]
            wins[samples.index(max(samples))] += 1
    return [w / draws for w in wins]


def decide(
    results: Sequence[VariantResult],
    metric: Metric,
    method: Method = "frequentist",
    confidence: float = 0.95,
    *,
    min_trials: int = 100,
) -> Decision:
    """The winner, if the data show one at ``confidence``; else None with the reason."""
    if len(results) < 2:
        raise AbTestInvalid(
            "An A/B test compares at least two variants", "A/B 测试至少要比较两个版本"
        )
    if not 0.5 < confidence < 1:
        raise AbTestInvalid("Confidence is between 50 % and 100 %", "置信度应在 50% 到 100% 之间")
    estimates = tuple(estimate(r, metric, confidence) for r in results)
    ordered = sorted(range(len(results)), key=lambda i: estimates[i].value, reverse=True)
    best = ordered[0]
    if min(r.trials for r in results) < min_trials:
        return Decision(
            None,
            0.0,
            method,
            metric,
            estimates,
            f"each variant needs at least {min_trials} messages measured",
            f"每个版本至少需要 {min_trials} 条有效数据",
        )
    if method == "bayesian":
        chance = probability_best(results, metric)[best]
        if chance >= confidence:
            return Decision(
                results[best].name,
                chance,
                method,
                metric,
                estimates,
                f"{results[best].name} is best with probability {chance:.1%}",
                f"{results[best].name} 为最优版本的概率为 {chance:.1%}",
            )
        return Decision(
            None,
            chance,
            method,
            metric,
            estimates,
            f"the likeliest best is {results[best].name} at {chance:.1%}, below {confidence:.0%}",
            f"最可能最优的是 {results[best].name}（{chance:.1%}），未达到 {confidence:.0%}",
        )
    test = two_proportion_p if metric in PROPORTIONS else mean_p
    worst_p = max(test(results[best], results[i]) for i in ordered[1:])
    level = (1 - confidence) / (len(results) - 1)
    sure = 1 - worst_p
    if worst_p <= level:
        return Decision(
            results[best].name,
            sure,
            method,
            metric,
            estimates,
            f"{results[best].name} beats every other variant (p ≤ {worst_p:.4f})",
            f"{results[best].name} 显著优于其他所有版本（p ≤ {worst_p:.4f}）",
        )
    return Decision(
        None,
        sure,
        method,
        metric,
        estimates,
        f"{results[best].name} leads but not significantly (p = {worst_p:.4f} > {level:.4f})",
        f"{results[best].name} 领先但差异不显著（p = {worst_p:.4f} > {level:.4f}）",
    )

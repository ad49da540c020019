"""Wilson score intervals against published values; percentages that add up to 100."""

from __future__ import annotations

import random

import pytest

from agent.report.statistics import rounded_percentages, wilson_interval, wilson_percent

# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion:
# comparison of seven methods", Stat Med 17:857-872, Table I, method 3 (Wilson score
# without continuity correction).
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE)
def test_wilson_matches_newcombe(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_known_differential_values() -> None:
    # 5 basophils in 200 cells, and the all/none extremes, in percent.
    assert wilson_percent(5, 200) == (1.1, 5.7)
    assert wilson_percent(0, 200) == (0.0, 1.9)
    assert wilson_percent(200, 200) == (98.1, 100.0)
    assert wilson_percent(100, 200) == (43.1, 56.9)


def test_wilson_is_symmetric_and_contains_the_estimate() -> None:
    for n in (1, 7, 100, 200, 500):
        for k in range(0, n + 1, max(1, n // 13)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            mlo, mhi = wilson_interval(n - k, n)
            assert lo == pytest.approx(1 - mhi) and hi == pytest.approx(1 - mlo)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_percentages_sum_to_exactly_100() -> None:
    rng = random.Random(3)
    for _ in range(500):
        counts = {c: rng.randint(0, 60) for c in "abcdef"}
        if sum(counts.values()) == 0:
            continue
        pct = rounded_percentages(counts)
        assert round(sum(pct.values()), 6) == 100.0
        total = sum(counts.values())
        for c, p in pct.items():
            assert abs(p - 100.0 * counts[c] / total) < 0.1 + 1e-9
            assert p == round(p, 1)


def test_percentages_of_thirds_and_zeros() -> None:
    assert rounded_percentages({"a": 1, "b": 1, "c": 1}) == {"a": 33.4, "b": 33.3, "c": 33.3}
    assert rounded_percentages({"a": 0, "b": 4}) == {"a": 0.0, "b": 100.0}
    with pytest.raises(ValueError):
        rounded_percentages({"a": 0})

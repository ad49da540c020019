"""Percentages and their 95% confidence intervals.

A differential of 200 cells is a sample of a few thousand million white cells, so
each percentage is an estimate; the Wilson score interval is used because, unlike
the textbook normal ("Wald") interval, it stays inside 0-100 % and keeps its
coverage for rare classes (basophils at 0-2 %) and small counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K", bound=str)

Z_95 = 1.959963984540054
"""Two-sided 97.5th percentile of the standard normal distribution."""

PERCENT_DECIMALS = 1
"""Percentages and interval bounds are reported to one decimal place."""


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (as fractions 0..1) for ``successes`` out of ``total``."""
    if total <= 0:
        raise ValueError("a confidence interval needs at least one observation")
    if not 0 <= successes <= total:
        raise ValueError(f"successes ({successes}) must be between 0 and total ({total})")
    p = successes / total
    z2 = z * z
    denominator = 1.0 + z2 / total
    centre = (p + z2 / (2.0 * total)) / denominator
    half = (z / denominator) * math.sqrt(p * (1.0 - p) / total + z2 / (4.0 * total * total))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return (low, high)


def wilson_percent(successes: int, total: int) -> tuple[float, float]:
    """The Wilson 95% interval in percent, rounded for reporting."""
    low, high = wilson_interval(successes, total)
    return (round(100.0 * low, PERCENT_DECIMALS), round(100.0 * high, PERCENT_DECIMALS))


def rounded_percentages(counts: Mapping[K, int]) -> dict[K, float]:
    """Percentages of ``counts`` rounded so that they add up to exactly 100.

    Rounding each share independently can make a differential add up to 99.9 or
    100.1, which readers take for an error; the largest-remainder method moves the
    missing tenths to the shares that lost the most in rounding (each share moves by
    less than one unit of the last decimal).
    """
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("percentages need at least one counted cell")
    scale = 10**PERCENT_DECIMALS
    units = 100 * scale
    exact = {k: v * units / total for k, v in counts.items()}
    floors = {k: math.floor(x) for k, x in exact.items()}
    missing = units - sum(floors.values())
    # Largest remainder first; ties broken by the larger count, then by name, so the
    # result does not depend on dict order.
    order = sorted(exact, key=lambda k: (-(exact[k] - floors[k]), -counts[k], k))
    for k in order[:missing]:
        floors[k] += 1
    return {k: floors[k] / scale for k in counts}

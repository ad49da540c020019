"""The reconnect schedule: quick attempts after a loss, then jittered doubling up to the cap."""

from __future__ import annotations

import random

import pytest

from agent.transport.backoff import QUICK_ATTEMPTS, ReconnectBackoff


def delays(backoff: ReconnectBackoff, n: int) -> list[float]:
    return [backoff.next_delay() for _ in range(n)]


def test_the_first_attempts_are_quick_then_the_wait_doubles_up_to_the_cap() -> None:
    backoff = ReconnectBackoff(0.5, 10.0, rng=random.Random(1))
    waits = delays(backoff, 40)
    assert all(0.25 <= w <= 0.5 for w in waits[:QUICK_ATTEMPTS])
    steps = [min(10.0, 0.5 * 2 ** (k + 1)) for k in range(40 - QUICK_ATTEMPTS)]
    for wait, step in zip(waits[QUICK_ATTEMPTS:], steps, strict=True):
        assert step / 2 <= wait <= step
    assert max(waits) <= backoff.longest_s == 10.0
    assert max(waits[-10:]) > 7.5  # it does reach the cap's range


def test_waits_are_jittered_so_analyzers_do_not_return_in_step() -> None:
    a = delays(ReconnectBackoff(0.5, 10.0, rng=random.Random(1)), 12)
    b = delays(ReconnectBackoff(0.5, 10.0, rng=random.Random(2)), 12)
    assert all(x != y for x, y in zip(a, b, strict=True))
    assert len(set(a)) == len(a)


def test_a_connection_starts_the_next_outage_with_quick_attempts_again() -> None:
    backoff = ReconnectBackoff(1.0, 60.0, rng=random.Random(3))
    delays(backoff, 20)
    backoff.reset()
    assert all(w <= 1.0 for w in delays(backoff, QUICK_ATTEMPTS))


def test_a_huge_number_of_attempts_does_not_overflow() -> None:
    backoff = ReconnectBackoff(0.1, 3600.0, rng=random.Random(4))
    assert max(delays(backoff, 5000)) <= 3600.0


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_a_bad_range_is_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError):
        ReconnectBackoff(low, high)

"""How far a sample is, and how long it will probably take.

The estimate is the white-cell rate since the first analysed field (survey and
calibration come before it and are not repeated), extrapolated to the target and
capped by what is left of the scan's time budget, since the scan stops there anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.daemon.sample_runner import SampleOutcome
    from agent.transport.payloads import StatePayload


@dataclass(frozen=True)
class SampleProgress:
    """A running sample's progress, as published on ``progress``."""

    sample_id: str
    fields_scanned: int
    """Fields analysed so far."""
    wbc_found: int
    """Identified white cells counted so far (after de-duplication)."""
    target_wbc: int
    eta_s: float | None
    """Estimated seconds left; None until the rate is known."""
    elapsed_s: float
    """Seconds since the sample started."""


class EtaEstimator:
    """Seconds left until the target, from the counting rate so far.

    Args:
        target_wbc: white cells the scan stops at.
        time_budget_s: the scan's time budget (s), counted from ``start()``.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, target_wbc: int, time_budget_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._target = target_wbc
        self._budget = time_budget_s
        self._clock = clock
        self._started: float | None = None
        self._first_field: float | None = None
        self._first_count = 0

    def start(self) -> None:
        """The scan (and its time budget) starts now."""
        self._started = self._clock()

    def update(self, wbc_found: int) -> float | None:
        """Seconds left after a field brought the count to ``wbc_found``; None if unknown."""
        now = self._clock()
        if self._started is None:
            self._started = now
        if wbc_found >= self._target:
            return 0.0
        budget_left = max(0.0, self._budget - (now - self._started))
        if self._first_field is None:
            # The first field's cells came with the survey's cost: start the rate here.
            self._first_field = now
            self._first_count = wbc_found
            return None
        counted = wbc_found - self._first_count
        spent = now - self._first_field
        if counted <= 0 or spent <= 0:
            return budget_left if counted <= 0 and spent > 0 else None
        eta = (self._target - wbc_found) * spent / counted
        return round(min(eta, budget_left), 1)


class ServiceListener:
    """In-process observers of the service (``demo``'s progress bar); the default ignores all.

    Called on the thread that caused the change (mostly the worker): return quickly.
    """

    def on_state(self, state: StatePayload) -> None:
        """The service's state changed."""

    def on_progress(self, progress: SampleProgress) -> None:
        """A sample analysed a field."""

    def on_outcome(self, outcome: SampleOutcome) -> None:
        """A sample ended with a report (preliminary or aborted)."""

"""Where the focus is along z: search strategies over an injected probe.

The algorithms here never touch hardware. They ask a ``FocusProbe`` for the sharpness
at a z (the probe moves the stage, approaching from below to take up backlash,
captures and scores) and decide where to look next; tests drive them with synthetic
focus curves. Two strategies:

* ``local_focus``: three images around a predicted z (from the focus surface), a
  Gaussian fit of the peak; when the peak lies past an end it follows it a few steps.
  Cheap: the common case for a scan.
* ``search_focus``: a coarse sweep over a range with a broad metric, then a fine sweep
  with a sharp metric around the coarse peak, then the same fit. Used for the first
  field of a sample and whenever a local check fails.

Each ends with the image to keep: an image already taken within
``accept_tolerance_um`` of the fitted peak, otherwise one more image at the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import FocusConfig


@dataclass(frozen=True)
class FocusSample:
    """One image taken during focusing, reduced to its scores."""

    z_um: float
    score: float
    """Fine metric: peaks sharply at focus."""
    coarse_score: float
    """Coarse metric: broad peak."""
    textured: bool
    """False when the image shows nothing to focus on."""
    key: int = 0
    """The probe's handle on the image (the algorithms never look at pixels)."""


FocusProbe = Callable[[float], FocusSample]
"""Move to z (um), capture, score. Raises whatever the stage or camera raise."""

FocusMethod = Literal["local", "search"]

NO_TEXTURE = "no texture to focus on"
"""``FocusResult.reason`` of a field with nothing on it: searching further cannot help."""


@dataclass(frozen=True)
class FocusResult:
    """The outcome of focusing one field."""

    ok: bool
    z_um: float
    """Fitted focus (um); when not ok, the best guess (z of the sharpest image)."""
    final: FocusSample | None
    """The image to keep (sharpest, at or near ``z_um``); None only if no image was taken."""
    samples: tuple[FocusSample, ...]
    """Every image taken, in order."""
    method: FocusMethod
    reason: str = ""
    """Why focusing failed ('' when ok)."""

    @property
    def images(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class SearchParams:
    """The focus config plus the z range the stage may go to."""

    focus: FocusConfig
    z_min_um: float
    z_max_um: float

    def clip(self, z_um: float) -> float:
        """``z_um`` brought within the z limits."""
        return min(self.z_max_um, max(self.z_min_um, z_um))

    def snap(self, z_um: float) -> float:
        """The position the stage can really go to nearest ``z_um`` (limits, then z_step_um)."""
        step = self.focus.z_step_um
        z = self.clip(z_um)
        snapped = round(z / step) * step
        if snapped > self.z_max_um:
            snapped -= step
        elif snapped < self.z_min_um:
            snapped += step
        return round(snapped, 6)


@dataclass(frozen=True)
class Peak:
    """The fitted maximum of a focus curve."""

    z_um: float
    at_edge: int
    """-1 or +1 when the best sample is the lowest or highest z sampled, else 0."""
    local_ratio: float
    """Best score over the mean of its two neighbours (1.0 at an edge)."""
    best: FocusSample


_TINY = 1e-12
_FIT_MISSED = 0.85
"""An image at the fitted peak scoring below this share of the best image means a bad fit
(near the top, scores differ by less than their noise, so only a clear drop counts)."""


def fit_peak(samples: Sequence[FocusSample], *, coarse: bool = False) -> Peak:
    """Fit a Gaussian (a parabola in log score) through the best sample and its neighbours.

    A Gaussian describes a defocus curve near its top better than a parabola and is
    exact for three points, so three images suffice when the prediction is close.
    Raises ValueError on an empty sequence.
    """
    if not samples:
        raise ValueError("no focus samples to fit")
    by_z = sorted(samples, key=lambda s: s.z_um)

    def value(s: FocusSample) -> float:
        return s.coarse_score if coarse else s.score

    i = max(range(len(by_z)), key=lambda k: value(by_z[k]))
    best = by_z[i]
    if len(by_z) < 3 or i in (0, len(by_z) - 1):
        edge = -1 if i == 0 else 1
        return Peak(z_um=best.z_um, at_edge=edge, local_ratio=1.0, best=best)
    s0, s1, s2 = by_z[i - 1], by_z[i], by_z[i + 1]
    x0, x1, x2 = s0.z_um, s1.z_um, s2.z_um
    y0, y1, y2 = (math.log(max(value(s), _TINY)) for s in (s0, s1, s2))
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    z = x1
    if denom != 0.0:
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
        if a < 0.0:
            z = min(x2, max(x0, -b / (2.0 * a)))
    neighbours = (value(s0) + value(s2)) / 2.0
    ratio = value(s1) / neighbours if neighbours > _TINY else math.inf
    return Peak(z_um=z, at_edge=0, local_ratio=ratio, best=best)


class _Session:
    """One field's focusing: counts images, checks cancel, remembers every sample."""

    def __init__(self, probe: FocusProbe, params: SearchParams, cancel: CancelToken | None) -> None:
        self._probe = probe
        self._params = params
        self._cancel = cancel
        self.samples: list[FocusSample] = []

    @property
    def budget_left(self) -> int:
        return self._params.focus.max_images_per_field - len(self.samples)

    def take(self, z_um: float) -> FocusSample:
        if self._cancel is not None:
            self._cancel.check()
        if self.budget_left <= 0:
            raise _BudgetSpent
        sample = self._probe(self._params.snap(z_um))
        self.samples.append(sample)
        return sample

    def sweep(self, zs: Sequence[float]) -> list[FocusSample]:
        return [self.take(z) for z in sorted(zs)]

    def result(self, method: FocusMethod, ok: bool, z_um: float, reason: str = "") -> FocusResult:
        final = max(self.samples, key=lambda s: s.score) if self.samples else None
        return FocusResult(
            ok=ok,
            z_um=z_um,
            final=final,
            samples=tuple(self.samples),
            method=method,
            reason=reason,
        )


class _BudgetSpent(Exception):
    """Internal: the per-field image budget ran out."""


def _near(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


def _climb(
    session: _Session, curve: list[FocusSample], step: float, max_walk: int, params: SearchParams
) -> tuple[Peak | None, str]:
    """Fit ``curve``; while its peak is at an end, extend it one ``step`` that way."""
    walked = 0
    while True:
        peak = fit_peak(curve)
        if not peak.at_edge:
            return peak, ""
        if walked >= max_walk:
            return None, "focus peak lies outside the images taken"
        z_next = curve[0].z_um - step if peak.at_edge < 0 else curve[-1].z_um + step
        clipped = params.clip(z_next)
        if not _near(clipped, z_next):
            return None, "focus peak lies beyond the stage's z limits"
        curve.append(session.take(z_next))
        curve.sort(key=lambda s: s.z_um)
        walked += 1


def _finish(
    session: _Session, method: FocusMethod, peak: Peak, params: SearchParams
) -> FocusResult:
    """Keep an image close enough to the fitted peak, or take one there."""
    tol = params.focus.accept_tolerance_um
    z = params.snap(peak.z_um)
    nearest = min(session.samples, key=lambda s: abs(s.z_um - z))
    if abs(nearest.z_um - z) > tol:
        extra = session.take(z)
        if extra.score < _FIT_MISSED * peak.best.score:
            # Far below the best image seen: the fit was fooled; keep the sharpest image.
            return FocusResult(True, peak.best.z_um, peak.best, tuple(session.samples), method)
        nearest = extra
    return FocusResult(True, params.clip(peak.z_um), nearest, tuple(session.samples), method)


def _judge(peak: Peak, params: SearchParams, reference_score: float | None) -> str:
    """Why this fitted peak is not believable ('' if it is)."""
    focus = params.focus
    if not peak.best.textured:
        return NO_TEXTURE
    if peak.local_ratio < focus.min_local_ratio:
        return "focus curve is flat around its peak"
    if reference_score is not None and peak.best.score < focus.min_relative_score * reference_score:
        return "focus score far below the other fields'"
    return ""


def local_focus(
    probe: FocusProbe,
    z_predicted_um: float,
    params: SearchParams,
    *,
    reference_score: float | None = None,
    cancel: CancelToken | None = None,
) -> FocusResult:
    """Check focus around a predicted z with three images, following the peak if needed.

    ``reference_score`` is a typical in-focus score of this sample (e.g. the median of
    the fields focused so far): a peak far below it means the check found a side lobe
    or a defocused field, not the focus.
    """
    session = _Session(probe, params, cancel)
    d = params.focus.check_step_um
    try:
        curve = session.sweep([z_predicted_um - d, z_predicted_um, z_predicted_um + d])
        if not any(s.textured for s in curve):
            return session.result("local", False, z_predicted_um, NO_TEXTURE)
        peak, why = _climb(session, curve, d, params.focus.max_walk_steps, params)
        if peak is None:
            return session.result("local", False, z_predicted_um, why)
        why = _judge(peak, params, reference_score)
        if why:
            return session.result("local", False, peak.z_um, why)
        return _finish(session, "local", peak, params)
    except _BudgetSpent:
        return session.result("local", False, z_predicted_um, "image budget for one field spent")


def _sweep_positions(
    centre_um: float, span_um: float, step_um: float, params: SearchParams
) -> list[float]:
    lo = params.clip(centre_um - span_um / 2.0)
    hi = params.clip(centre_um + span_um / 2.0)
    # (each position is snapped to the stage's step when taken)
    n = max(1, math.floor((hi - lo) / step_um + 1e-9) + 1)
    offset = ((hi - lo) - (n - 1) * step_um) / 2.0
    return [lo + offset + k * step_um for k in range(n)]


def search_focus(
    probe: FocusProbe,
    centre_um: float,
    span_um: float,
    params: SearchParams,
    *,
    cancel: CancelToken | None = None,
) -> FocusResult:
    """Coarse-to-fine search for the focus over ``centre_um`` +- ``span_um`` / 2."""
    focus = params.focus
    session = _Session(probe, params, cancel)
    try:
        coarse = session.sweep(_sweep_positions(centre_um, span_um, focus.coarse_step_um, params))
        if not any(s.textured for s in coarse):
            return session.result("search", False, centre_um, NO_TEXTURE)
        scores = [s.coarse_score for s in coarse]
        if len(coarse) >= 3 and max(scores) < focus.min_peak_ratio * max(min(scores), _TINY):
            return session.result("search", False, centre_um, "no focus peak in the search range")
        rough = fit_peak(coarse, coarse=True)
        half = (focus.fine_points - 1) / 2.0
        fine = session.sweep(
            [rough.z_um + (k - half) * focus.fine_step_um for k in range(focus.fine_points)]
        )
        peak, why = _climb(session, fine, focus.fine_step_um, focus.fine_points, params)
        if peak is None:
            return session.result("search", False, rough.z_um, why)
        why = _judge(peak, params, None)
        if why:
            return session.result("search", False, peak.z_um, why)
        return _finish(session, "search", peak, params)
    except _BudgetSpent:
        return session.result("search", False, centre_um, "image budget for one field spent")


def merge(first: FocusResult, second: FocusResult) -> FocusResult:
    """``second``'s outcome, counting the images both took (a fallback after a failed check)."""
    return FocusResult(
        ok=second.ok,
        z_um=second.z_um,
        final=second.final if second.final is not None else first.final,
        samples=first.samples + second.samples,
        method=second.method,
        reason=second.reason,
    )

"""Focusing fields on the rig: surface prediction, local check, full search as fallback.

Glue between the pure pieces (``focus_search``, ``focus_surface``, ``focus_metrics``)
and the ``Rig``: a field's focus is predicted from the surface of the fields focused
before it, confirmed by a three-image local check, and searched in full only when the
check fails. The first field of a sample (no surface yet) gets the wide initial search.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import FocusConfig
from agent.acquisition.errors import AcquisitionError
from agent.acquisition.focus_metrics import measure_focus
from agent.acquisition.focus_search import (
    NO_TEXTURE,
    FocusResult,
    FocusSample,
    SearchParams,
    local_focus,
    merge,
    search_focus,
)
from agent.acquisition.focus_surface import FocusSurface
from agent.acquisition.rig import Rig
from drivers.camera.base import Frame

_log = logging.getLogger(__name__)

_KEEP_FRAMES = 4
"""Sharpest frames of a field kept in memory (full frames are ~9 MB each)."""
_REFERENCE_FIELDS = 25
"""Recent in-focus scores whose median is the 'typical focus score' of the sample."""
_REFERENCE_MIN = 3


@dataclass(frozen=True)
class FocusedField:
    """A field after focusing: the image kept and how it was found."""

    x_um: float
    y_um: float
    frame: Frame
    result: FocusResult
    predicted_z_um: float | None
    images: int
    """Images taken for this field (focus sweep, plus a re-capture if one was needed)."""

    @property
    def z_um(self) -> float:
        """Stage z of the kept image (um)."""
        final = self.result.final
        return final.z_um if final is not None else self.result.z_um

    @property
    def score(self) -> float:
        final = self.result.final
        return final.score if final is not None else 0.0


FirstLook = Callable[[Frame], None]
"""Called with a field's first image; may raise to abandon the field before focusing."""


class _Probe:
    """The ``FocusProbe`` of one field: moves, captures, scores, keeps the best frames."""

    def __init__(self, af: Autofocus, x_um: float, y_um: float, first_look: FirstLook | None):
        self._af = af
        self._x = x_um
        self._y = y_um
        self._first_look = first_look
        self._frames: dict[int, tuple[float, Frame]] = {}
        self.taken = 0

    def __call__(self, z_um: float) -> FocusSample:
        rig = self._af.rig
        rig.goto(self._x, self._y, z_um)
        frame = rig.capture()
        self.taken += 1
        if self._first_look is not None:
            look, self._first_look = self._first_look, None
            look(frame)
        start = self._af.clock()
        cfg = self._af.config
        m = measure_focus(
            frame.image,
            metric=cfg.metric,
            downsample=cfg.downsample,
            coarse_metric=cfg.coarse_metric,
            coarse_downsample=cfg.coarse_downsample,
            min_contrast=cfg.min_contrast,
        )
        self._af.processing_s += self._af.clock() - start
        key = self.taken
        self._frames[key] = (m.score, frame)
        if len(self._frames) > _KEEP_FRAMES:
            worst = min(self._frames, key=lambda k: self._frames[k][0])
            del self._frames[worst]
        return FocusSample(z_um, m.score, m.coarse_score, m.textured, key)

    def frame_for(self, sample: FocusSample) -> Frame:
        """The frame of ``sample``; captured again if it was not kept."""
        kept = self._frames.get(sample.key)
        if kept is not None:
            return kept[1]
        rig = self._af.rig
        rig.goto(self._x, self._y, sample.z_um)
        self.taken += 1
        return rig.capture()


class Autofocus:
    """Focuses fields one after another, learning the focus surface as it goes."""

    def __init__(
        self,
        rig: Rig,
        config: FocusConfig,
        *,
        z_min_um: float,
        z_max_um: float,
        cancel: CancelToken,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rig = rig
        self.config = config
        self.clock = clock
        self.params = SearchParams(config, z_min_um, z_max_um)
        self.surface = FocusSurface(
            quadratic_min_points=config.quadratic_min_points,
            outlier_um=config.surface_outlier_um,
            local_radius_um=config.local_radius_um,
        )
        self._cancel = cancel
        self._scores: deque[float] = deque(maxlen=_REFERENCE_FIELDS)
        self.processing_s = 0.0
        """Seconds spent scoring images."""

    def reference_score(self) -> float | None:
        """Median in-focus score of recent fields: what a focused field of this sample scores."""
        if len(self._scores) < _REFERENCE_MIN:
            return None
        return statistics.median(self._scores)

    def focus(
        self,
        x_um: float,
        y_um: float,
        *,
        first_look: FirstLook | None = None,
        wide: bool = False,
    ) -> FocusedField:
        """Focus the field at (x, y) and return its sharpest image.

        ``wide`` forces the initial wide search around ``start_z_um`` (used until the
        first field of a sample is found). ``first_look`` sees the first image taken and
        may raise to abandon the field (e.g. it is empty) before any more are taken.
        """
        cfg = self.config
        probe = _Probe(self, x_um, y_um, first_look)
        predicted = None if wide else self.surface.predict(x_um, y_um)
        if predicted is None:
            result = search_focus(
                probe, cfg.start_z_um, cfg.initial_range_um, self.params, cancel=self._cancel
            )
        else:
            # How far off the prediction may be: the slide's steepest tilt times the
            # distance to the nearest field already focused (the survey's points are far
            # apart; a scan's neighbours are close).
            doubt_um = cfg.max_tilt_um_per_mm * self.surface.nearest_distance_um(x_um, y_um) / 1e3
            result = local_focus(
                probe,
                predicted,
                self.params,
                reference_score=self.reference_score(),
                cancel=self._cancel,
            )
            # A field far out of focus shows no texture either: only a close prediction
            # makes "no texture" mean "nothing there".
            hopeless = result.reason == NO_TEXTURE and doubt_um <= cfg.texture_range_um
            if not result.ok and not hopeless:
                span = max(cfg.fallback_range_um, 4.0 * doubt_um)
                _log.debug(
                    "local focus check at (%.0f, %.0f) failed (%s); searching %.0f um",
                    x_um,
                    y_um,
                    result.reason,
                    span,
                )
                second = search_focus(probe, predicted, span, self.params, cancel=self._cancel)
                result = merge(result, second)
        if result.final is None:
            raise AcquisitionError("autofocus took no image (focus.max_images_per_field?)")
        frame = probe.frame_for(result.final)
        if result.ok:
            self.surface.add(x_um, y_um, result.z_um)
            self._scores.append(result.final.score)
        return FocusedField(x_um, y_um, frame, result, predicted, probe.taken)

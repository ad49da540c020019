"""The field scanner: survey, calibrate, then capture fields while the last one is analysed.

A producer thread drives the stage and camera (through ``Rig`` and ``Autofocus``) and
puts in-focus monolayer fields on a small bounded queue; the caller iterates over
them, analyses each, and reports how many white cells it found, which the planner
uses to stop. Stage motion and capture of field n+1 thus overlap the analysis of
field n, and the queue bound keeps memory flat when analysis is slower.

Usage (the daemon)::

    scanner = Scanner(stage, camera, config.acquisition, config.camera, config.stage.limits)
    with scanner.start(cancel) as scan:
        for field in scan:
            scan.report(field, count_white_cells(field))
    result = scan.result          # ScanResult: stop reason, fields, timing

or ``result = scanner.run(count_white_cells, cancel)``. A stage or camera failure ends
the iteration with ``ScanError`` (``.result`` holds what was scanned so far); a cancel
ends it with ``ScanCancelled``. The stage must be connected (and homed) before.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.acquisition.autofocus import Autofocus, FocusedField
from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import AcquisitionConfig
from agent.acquisition.errors import Cancelled, ScanCancelled, ScanError
from agent.acquisition.field import FieldImage
from agent.acquisition.field_classes import (
    FieldClass,
    FieldKind,
    classify_coverage,
    classify_field,
    estimate_background,
    red_cell_coverage,
    shrink,
)
from agent.acquisition.illumination import Illumination, calibrate, meter
from agent.acquisition.rig import Rig
from agent.acquisition.scan_planner import PlannedField, ScanPlanner, SurveyPoint
from agent.errors import AnalyzerError, ConfigError
from agent.heartbeat import Heartbeat
from drivers.camera.base import BgrImage, Camera, Frame
from drivers.camera.config import CameraConfig
from drivers.errors import DeviceError
from drivers.stage.base import Stage
from drivers.stage.config import StageLimits

_log = logging.getLogger(__name__)

_POLL_S = 0.1
"""Queue waits are sliced this finely so cancels and stops are seen promptly."""
_JOIN_S = 30.0
"""Longest wait for the producer to end after a cancel (it stops within one move)."""

StopReason = Literal[
    "target_reached",
    "max_fields",
    "time_budget",
    "area_exhausted",
    "no_monolayer",
    "cancelled",
    "error",
]
FieldStatus = Literal["analysed", "empty", "thick", "unfocused", "discarded"]


@dataclass(frozen=True)
class FieldSummary:
    """One captured field, without its pixels: what happened to it and why."""

    order: int
    """Capture order within the scan (survey excluded), from 0."""
    index: int | None
    """``FieldImage.index`` when handed to the caller, else None."""
    x_um: float
    y_um: float
    z_um: float
    status: FieldStatus
    coverage: float
    focus_ok: bool
    focus_score: float
    focus_images: int
    focus_method: str
    focus_reason: str
    predicted_z_um: float | None
    bounds: tuple[float, float, float, float]
    """Slide rectangle (x0, y0, x1, y1) in um."""
    wbc: int | None = None
    """White cells the caller reported for it."""


@dataclass(frozen=True)
class SurveySummary:
    """One survey position and what it showed."""

    x_um: float
    y_um: float
    z_um: float
    kind: FieldKind
    coverage: float
    focus_ok: bool
    focus_images: int


@dataclass(frozen=True)
class ScanTiming:
    """Where the scan's time went (seconds)."""

    total_s: float
    acquisition_s: float
    """The producer busy: moving, focusing, capturing, judging (includes survey, calibration)."""
    waiting_s: float
    """The producer idle because the queue was full (analysis behind acquisition)."""
    analysis_wait_s: float
    """The caller idle waiting for the next field (acquisition behind analysis)."""
    moving_s: float
    capturing_s: float
    processing_s: float
    """Scoring and judging images."""
    survey_s: float
    calibration_s: float
    images: int
    """Frames captured in all."""


@dataclass(frozen=True)
class FocusSurfaceSummary:
    kind: str
    points: int
    inliers: int
    rms_um: float


@dataclass(frozen=True)
class ScanResult:
    """What a scan did. Also carried by ``ScanError`` when a scan fails part-way."""

    stop_reason: StopReason
    message: str
    fields: tuple[FieldSummary, ...]
    survey: tuple[SurveySummary, ...]
    illumination: Illumination | None
    wbc_found: int
    timing: ScanTiming
    surface: FocusSurfaceSummary

    @property
    def analysed(self) -> tuple[FieldSummary, ...]:
        """The fields handed to the caller (and not discarded)."""
        return tuple(f for f in self.fields if f.status == "analysed")

    def analysed_bounds(self) -> list[tuple[float, float, float, float]]:
        """Slide rectangles (x0, y0, x1, y1, um) of the analysed fields."""
        return [f.bounds for f in self.analysed]


@dataclass
class _SurveyShot:
    point: SurveyPoint
    focused: FocusedField
    green: np.ndarray
    brightest: float
    background_fraction: float


@dataclass
class _Clocks:
    started: float = 0.0
    finished: float | None = None
    waiting_s: float = 0.0
    analysis_wait_s: float = 0.0
    processing_s: float = 0.0
    survey_s: float = 0.0
    calibration_s: float = 0.0


class _Skip(Exception):
    """Internal: the first look showed a field not worth focusing."""

    def __init__(self, verdict: FieldClass) -> None:
        super().__init__(verdict.kind)
        self.verdict = verdict


@dataclass
class _Outcome:
    reason: StopReason | None = None
    message: str = ""
    cause: BaseException | None = None


class Scanner:
    """Scans one sample on a connected stage and camera; see the module docstring."""

    def __init__(
        self,
        stage: Stage,
        camera: Camera,
        config: AcquisitionConfig,
        camera_config: CameraConfig,
        stage_limits: StageLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stage = stage
        self._camera = camera
        self._config = config
        self._camera_config = camera_config
        self._limits = stage_limits
        self._clock = clock
        self.field_width_um = camera_config.width * camera_config.pixel_size_um
        self.field_height_um = camera_config.height * camera_config.pixel_size_um
        self._check_area()

    def _check_area(self) -> None:
        area, lim = self._config.scan_area, self._limits
        problems = []
        if area.x_min_um < lim.x.min_um or area.x_max_um > lim.x.max_um:
            problems.append("x")
        if area.y_min_um < lim.y.min_um or area.y_max_um > lim.y.max_um:
            problems.append("y")
        if problems:
            raise ConfigError(
                f"acquisition.scan_area lies outside the stage limits in {' and '.join(problems)}"
            )
        focus = self._config.focus
        if not lim.z.min_um <= focus.start_z_um <= lim.z.max_um:
            raise ConfigError(
                f"acquisition.focus.start_z_um ({focus.start_z_um}) lies outside stage.limits.z"
            )
        if area.x_max_um - area.x_min_um < self.field_width_um or (
            area.y_max_um - area.y_min_um < self.field_height_um
        ):
            raise ConfigError("acquisition.scan_area is smaller than one camera field")

    def start(
        self, cancel: CancelToken | None = None, *, heartbeat: Heartbeat | None = None
    ) -> ScanRun:
        """Start scanning in a background thread; iterate the returned run for fields.

        ``heartbeat`` watches that thread (the daemon's health check reads it): it
        beats at every survey point, field and wait, and is stuck after
        ``stall_timeout_s`` without one.
        """
        return ScanRun(self, cancel or CancelToken(), heartbeat or Heartbeat("acquisition"))

    def run(
        self, analyse: Callable[[FieldImage], int], cancel: CancelToken | None = None
    ) -> ScanResult:
        """Scan, calling ``analyse`` on each field (it returns the white cells found)."""
        with self.start(cancel) as scan:
            for image in scan:
                scan.report(image, analyse(image))
        return scan.result


class ScanRun:
    """A scan in progress: iterate for fields, ``report`` counts, ``cancel`` to stop."""

    def __init__(self, scanner: Scanner, cancel: CancelToken, heartbeat: Heartbeat) -> None:
        cfg = scanner._config
        self._s = scanner
        self._cfg = cfg
        self._cancel = cancel
        self._clock = scanner._clock
        self._lock = threading.Lock()
        self._queue: queue.Queue[FieldImage] = queue.Queue(maxsize=cfg.queue_size)
        self._stop_requested = threading.Event()
        self._ended = threading.Event()
        self._iterated = False
        self._clocks = _Clocks(started=self._clock())
        self._outcome = _Outcome()
        self._summaries: list[FieldSummary] = []
        self._by_index: dict[int, int] = {}
        self._survey: list[SurveySummary] = []
        self._illumination: Illumination | None = None
        self._delivered = 0
        self._background_green = 0.0
        self._flat: npt.NDArray[np.float32] | None = None
        self._planner = ScanPlanner(
            cfg, scanner.field_width_um, scanner.field_height_um, clock=self._clock
        )
        lim = scanner._limits
        self._rig = Rig(
            scanner._stage,
            scanner._camera,
            width=scanner._camera_config.width,
            height=scanner._camera_config.height,
            analogue_gain=scanner._camera_config.analogue_gain,
            backlash_um=cfg.focus.backlash_um,
            z_min_um=lim.z.min_um,
            cancel=cancel,
            clock=self._clock,
        )
        self._af = Autofocus(
            self._rig,
            cfg.focus,
            z_min_um=lim.z.min_um,
            z_max_um=lim.z.max_um,
            cancel=cancel,
            clock=self._clock,
        )
        self._beat = heartbeat
        self._thread = threading.Thread(target=self._produce, name="acquisition", daemon=True)
        heartbeat.attach(self._thread)
        heartbeat.working(cfg.stall_timeout_s)
        self._thread.start()

    # -- caller side ------------------------------------------------------------------

    def __enter__(self) -> ScanRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[FieldImage]:
        if self._iterated:
            raise RuntimeError("a scan can be iterated only once")
        self._iterated = True
        try:
            while True:
                if self._target_reached():
                    with self._lock:
                        self._planner.stop("target_reached")
                    self._stop_requested.set()
                    break
                image = self._next()
                if image is None:
                    break
                yield image
        finally:
            if not self._ended.is_set():
                self._stop_requested.set()
            self._finish()
        self._raise_if_failed()

    def _target_reached(self) -> bool:
        with self._lock:
            return self._planner.wbc_found >= self._cfg.target_wbc

    def _next(self) -> FieldImage | None:
        start = self._clock()
        try:
            while True:
                try:
                    return self._queue.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._ended.is_set() and self._queue.empty():
                        return None
                    if self._clock() - start > self._cfg.stall_timeout_s:
                        self._cancel.cancel("stalled")
                        self._finish()
                        raise ScanError(
                            f"no field from the scanner for {self._cfg.stall_timeout_s:.0f} s; "
                            "the stage or camera seems stuck",
                            self.result,
                        ) from None
        finally:
            self._clocks.analysis_wait_s += self._clock() - start

    def report(self, image: FieldImage | int, wbc: int) -> None:
        """How many white cells the caller found in a field (drives the stop on target)."""
        index = image if isinstance(image, int) else image.index
        if wbc < 0:
            raise ValueError(f"white-cell count cannot be negative: {wbc}")
        with self._lock:
            pos = self._by_index.get(index)
            if pos is None:
                raise ValueError(f"no field {index} was handed out by this scan")
            old = self._summaries[pos]
            if old.wbc is not None:
                raise ValueError(f"field {index} was already reported")
            self._summaries[pos] = replace(old, wbc=wbc)
            self._planner.add_wbc(wbc)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the scan at the next move; iteration then raises ``ScanCancelled``."""
        self._cancel.cancel(reason)

    def close(self) -> None:
        """Stop the producer (if still running) and wait for it. Safe to call twice."""
        if not self._ended.is_set():
            self._stop_requested.set()
        self._finish()

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    @property
    def result(self) -> ScanResult:
        """What the scan did so far (final once iteration has ended)."""
        with self._lock:
            summaries = tuple(self._summaries)
            wbc = self._planner.wbc_found
            reason = self._outcome.reason or self._planner.stop_reason or "cancelled"
            message = self._outcome.message
        c = self._clocks
        end = c.finished if c.finished is not None else self._clock()
        times = self._rig.times
        surface = self._af.surface
        processing = c.processing_s + self._af.processing_s
        return ScanResult(
            stop_reason=reason,
            message=message,
            fields=summaries,
            survey=tuple(self._survey),
            illumination=self._illumination,
            wbc_found=wbc,
            timing=ScanTiming(
                total_s=end - c.started,
                acquisition_s=max(0.0, end - c.started - c.waiting_s),
                waiting_s=c.waiting_s,
                analysis_wait_s=c.analysis_wait_s,
                moving_s=times.moving_s,
                capturing_s=times.capturing_s,
                processing_s=processing,
                survey_s=c.survey_s,
                calibration_s=c.calibration_s,
                images=times.captures,
            ),
            surface=FocusSurfaceSummary(
                surface.kind, len(surface.points), surface.inliers, surface.rms_um
            ),
        )

    def _finish(self) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_S)
            if self._thread.is_alive():
                self._cancel.cancel("scan abandoned")
                self._thread.join(_JOIN_S)
        # Whatever is still queued was captured but never analysed.
        while True:
            try:
                image = self._queue.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                pos = self._by_index.get(image.index)
                if pos is not None:
                    self._summaries[pos] = replace(self._summaries[pos], status="discarded")

    def _raise_if_failed(self) -> None:
        outcome = self._outcome
        if outcome.reason == "error":
            raise ScanError(outcome.message, self.result) from outcome.cause
        if outcome.reason == "cancelled":
            raise ScanCancelled(outcome.message, self.result) from outcome.cause

    # -- producer side ----------------------------------------------------------------

    def _produce(self) -> None:
        try:
            self._s._stage.set_led(self._cfg.led_pwm)
            self._prepare()
            self._scan()
        except Cancelled as e:
            self._set_outcome("cancelled", f"scan cancelled ({e})", e)
        except DeviceError as e:
            self._set_outcome("error", f"scan stopped by a hardware error: {e}", e)
        except AnalyzerError as e:
            self._set_outcome("error", f"scan failed: {e}", e)
        except Exception as e:  # a bug must not leave the caller waiting forever
            _log.exception("unexpected error in the acquisition thread")
            self._set_outcome("error", f"scan failed unexpectedly: {e!r}", e)
        finally:
            self._light_off()
            self._clocks.finished = self._clock()
            self._ended.set()
        # Not reached when a BaseException ends the thread: the heartbeat then says it died.
        self._beat.finished()

    def _set_outcome(self, reason: StopReason, message: str, cause: BaseException) -> None:
        with self._lock:
            self._outcome = _Outcome(reason, message, cause)
        _log.warning("%s", message)

    def _light_off(self) -> None:
        try:
            self._s._stage.set_led(0)
        except DeviceError as e:
            _log.warning("could not switch the LED off: %s", e)

    def _prepare(self) -> None:
        """LED, exposure, survey, white balance, plan: everything before the first field."""
        cfg = self._cfg
        ill = cfg.illumination
        fixed = self._s._camera_config.exposure_us is not None
        exposure = self._s._camera_config.exposure_us or ill.initial_exposure_us
        gains = (1.0, 1.0) if ill.white_balance else None
        self._rig.configure(exposure, gains)
        if ill.position is not None:
            self._rig.goto(ill.position.x_um, ill.position.y_um, cfg.focus.start_z_um)
            self._calibrate(fixed)
        start = self._clock()
        shots = self._survey_shots(metering=not fixed and ill.position is None)
        self._clocks.survey_s = self._clock() - start
        if ill.position is None:
            if not shots:
                raise ScanError("the survey found nothing: no field could be judged")
            best = max(
                shots, key=lambda s: (round(s.brightest / ill.tolerance), s.background_fraction)
            )
            x, y = best.point.x_um, best.point.y_um
            self._rig.goto(x, y, best.focused.z_um)
            survey_bg = self._calibrate(fixed)
        else:
            survey_bg = self._background_green
        darkness = cfg.field_classes.cell_darkness
        with self._lock:
            for shot in shots:
                coverage = red_cell_coverage(shot.green, survey_bg, darkness, self._flat)
                kind = classify_coverage(coverage, cfg.field_classes)
                self._planner.record_survey(
                    shot.point, kind, coverage, focused=shot.focused.result.ok
                )
                self._survey.append(
                    SurveySummary(
                        shot.point.x_um,
                        shot.point.y_um,
                        shot.focused.z_um,
                        kind,
                        coverage,
                        shot.focused.result.ok,
                        shot.focused.images,
                    )
                )
            planned = self._planner.plan()
        _log.info(
            "survey: %d of %d positions monolayer; %d fields planned; focus surface %s",
            sum(1 for s in self._survey if s.kind == "monolayer"),
            len(self._survey),
            planned,
            self._af.surface.kind,
        )

    def _calibrate(self, fixed: bool) -> float:
        """Calibrate on the field under the objective; returns its starting background level."""
        start = self._clock()
        rig = self._rig

        def expose(exposure_us: int, gains: tuple[float, float] | None) -> BgrImage:
            rig.configure(exposure_us, gains)
            return rig.capture().image

        ill = calibrate(
            expose,
            rig.exposure_us or self._cfg.illumination.initial_exposure_us,
            self._cfg.illumination,
            self._cfg.field_classes.cell_darkness,
            fixed_exposure=fixed,
            cancel=self._cancel,
        )
        rig.configure(ill.exposure_us, ill.gains)
        self._illumination = ill
        self._background_green = ill.background.green
        self._flat = ill.background.flat
        self._clocks.calibration_s += self._clock() - start
        _log.info(
            "illumination: exposure %d us, gains %s, background %.2f (%d tries)",
            ill.exposure_us,
            ill.gains,
            ill.background.green,
            ill.iterations,
        )
        return ill.start_background.green

    def _meter(self) -> None:
        rig = self._rig
        gains = rig.gains

        def expose(exposure_us: int, _gains: tuple[float, float] | None) -> BgrImage:
            rig.configure(exposure_us, gains)
            return rig.capture().image

        exposure = meter(
            expose,
            rig.exposure_us or self._cfg.illumination.initial_exposure_us,
            self._cfg.illumination,
            cancel=self._cancel,
        )
        rig.configure(exposure, gains)

    def _survey_shots(self, *, metering: bool) -> list[_SurveyShot]:
        cfg = self._cfg
        shots: list[_SurveyShot] = []
        have_focus = False
        for point in self._planner.survey_points():
            self._beat.beat()
            self._cancel.check()
            if self._planner.elapsed_s > cfg.time_budget_s:
                _log.warning("time budget spent during the survey")
                break
            if not have_focus and metering:
                self._rig.goto(point.x_um, point.y_um, cfg.focus.start_z_um)
                self._meter()
            focused = self._af.focus(point.x_um, point.y_um, wide=not have_focus)
            if focused.result.ok and not have_focus:
                have_focus = True
                if metering:
                    # In focus, the clearest part of the field is brighter than it was blurred.
                    self._rig.goto(point.x_um, point.y_um, focused.z_um)
                    self._meter()
                    focused = replace(focused, frame=self._rig.capture())
            start = self._clock()
            small = shrink(focused.frame.image)
            bg = estimate_background(small, cfg.field_classes.cell_darkness)
            shots.append(
                _SurveyShot(point, focused, small[:, :, 1].copy(), bg.brightest_green, bg.fraction)
            )
            self._clocks.processing_s += self._clock() - start
        return shots

    def _scan(self) -> None:
        while not self._stop_requested.is_set():
            self._beat.beat()
            self._cancel.check()
            with self._lock:
                planned = self._planner.next_field()
            if planned is None:
                return
            image = self._capture(planned)
            if image is not None and not self._deliver(image):
                return

    def _classify(self, image: BgrImage) -> FieldClass:
        start = self._clock()
        verdict = classify_field(image, self._background_green, self._cfg.field_classes, self._flat)
        self._clocks.processing_s += self._clock() - start
        return verdict

    def _capture(self, planned: PlannedField) -> FieldImage | None:
        def first_look(frame: Frame) -> None:
            verdict = self._classify(frame.image)
            if verdict.kind != "monolayer":
                raise _Skip(verdict)

        x, y = planned.x_um, planned.y_um
        predicted = self._af.surface.predict(x, y)
        try:
            focused = self._af.focus(x, y, first_look=first_look)
        except _Skip as skip:
            z = self._rig.position[2] if self._rig.position is not None else float("nan")
            self._record(planned, None, skip.verdict, z, predicted, focused=None)
            return None
        verdict = self._classify(focused.frame.image)
        image: FieldImage | None = None
        if verdict.kind == "monolayer" and focused.result.ok:
            cam = self._s._camera_config
            image = FieldImage(
                index=self._delivered,
                image=focused.frame.image,
                x_um=x,
                y_um=y,
                z_um=focused.z_um,
                pixel_size_um=cam.pixel_size_um,
                focus_score=focused.score,
                focus_ok=True,
                captured_at=focused.frame.metadata.timestamp,
                focus_images=focused.images,
                focus_method=focused.result.method,
                rbc_coverage=verdict.coverage,
            )
            self._delivered += 1
        self._record(planned, image, verdict, focused.z_um, predicted, focused=focused)
        return image

    def _record(
        self,
        planned: PlannedField,
        image: FieldImage | None,
        verdict: FieldClass,
        z_um: float,
        predicted: float | None,
        *,
        focused: FocusedField | None,
    ) -> None:
        status: FieldStatus
        if image is not None:
            status = "analysed"
            bounds = image.slide_bounds()
        else:
            status = "unfocused" if verdict.kind == "monolayer" else verdict.kind
            hw, hh = self._s.field_width_um / 2.0, self._s.field_height_um / 2.0
            bounds = (planned.x_um - hw, planned.y_um - hh, planned.x_um + hw, planned.y_um + hh)
        summary = FieldSummary(
            order=len(self._summaries),
            index=image.index if image is not None else None,
            x_um=planned.x_um,
            y_um=planned.y_um,
            z_um=z_um,
            status=status,
            coverage=verdict.coverage,
            focus_ok=focused.result.ok if focused is not None else False,
            focus_score=focused.score if focused is not None else 0.0,
            focus_images=focused.images if focused is not None else 1,
            focus_method=focused.result.method if focused is not None else "",
            focus_reason=focused.result.reason if focused is not None else "",
            predicted_z_um=predicted,
            bounds=bounds,
        )
        with self._lock:
            if image is not None:
                self._by_index[image.index] = len(self._summaries)
            self._summaries.append(summary)
            self._planner.record_field(planned, verdict.kind, verdict.coverage, image is not None)

    def _deliver(self, image: FieldImage) -> bool:
        """Queue a field for the caller; False if the scan was stopped meanwhile."""
        start = self._clock()
        try:
            while True:
                self._beat.beat()
                self._cancel.check()
                if self._stop_requested.is_set():
                    with self._lock:
                        pos = self._by_index[image.index]
                        self._summaries[pos] = replace(self._summaries[pos], status="discarded")
                    return False
                try:
                    self._queue.put(image, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
        finally:
            self._clocks.waiting_s += self._clock() - start

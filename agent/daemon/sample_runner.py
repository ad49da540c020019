"""One sample from start to report: home, scan, detect, classify, count, report.

The ``Scanner`` captures the next field in its own thread while this one analyses
the last (detector, classifier, de-duplication), and stops at the target count of
identified white cells, the scan area, the field limit or the time budget. Every
way a sample can end issues exactly one report through the ``ReportPublisher``:
preliminary when the scan ended normally (flags say if the target was missed),
aborted with the reason when it was cancelled or the hardware failed.

Used by the daemon's worker thread (``service``) and by ``algocyte-agent demo``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import AcquisitionConfig
from agent.acquisition.errors import ScanCancelled, ScanError
from agent.acquisition.scanner import Scanner, ScanResult
from agent.daemon.delivery import ReportPublisher
from agent.daemon.hardware import Hardware
from agent.daemon.progress import EtaEstimator, SampleProgress
from agent.errors import AnalyzerError
from agent.heartbeat import Heartbeat
from agent.report.model import Report, Timings
from agent.report.service import SampleRun
from agent.vision.field_analysis import FieldAnalyzer
from drivers.errors import DeviceError

_log = logging.getLogger(__name__)

Phase = str
"""'homing', 'surveying' (survey, light calibration, first focus), 'scanning', 'reporting'."""


class SampleListener:
    """What a sample tells its caller while it runs; the default ignores everything.

    Called on the worker thread: implementations must return quickly.
    """

    def on_phase(self, sample_id: str, phase: Phase) -> None:
        """The sample entered ``phase``."""

    def on_progress(self, progress: SampleProgress) -> None:
        """A field was analysed."""


@dataclass
class _Clocks:
    started: float
    homing_s: float = 0.0
    analysis_s: float = 0.0


@dataclass(frozen=True)
class SampleOutcome:
    """How a sample ended: its report, and the scan's own account of the time spent."""

    report: Report
    scan: ScanResult | None
    """None when the sample ended before the scan started (e.g. homing failed)."""
    timings: Timings
    homing_s: float = 0.0
    hardware_faults: tuple[str, ...] = field(default_factory=tuple)

    @property
    def aborted(self) -> bool:
        return self.report.status == "aborted"


class SampleRunner:
    """Runs samples on one set of hardware with one set of models."""

    def __init__(
        self,
        hardware: Hardware,
        analyzer: FieldAnalyzer,
        publisher: ReportPublisher,
        *,
        clock: Callable[[], float] = time.monotonic,
        acquisition_beat: Heartbeat | None = None,
    ) -> None:
        """``acquisition_beat`` watches each scan's acquisition thread (the daemon's health)."""
        self._hw = hardware
        self._analyzer = analyzer
        self._publisher = publisher
        self._clock = clock
        self._acquisition_beat = acquisition_beat
        self._phase: Phase | None = None

    @property
    def phase(self) -> Phase | None:
        """The running sample's phase; None between samples."""
        return self._phase

    def interrupt(self) -> None:
        """Make a cancel take effect now: during homing (which has no cancel point) stop the stage."""
        if self._phase == "homing":
            try:
                self._hw.stage.stop()
            except DeviceError as e:
                _log.warning("could not stop the stage: %s", e)

    def run(
        self, run: SampleRun, cancel: CancelToken, listener: SampleListener | None = None
    ) -> SampleOutcome:
        """Scan and report the sample ``run`` (already begun in the store). Never raises for
        the sample's own failures: they end in an aborted report."""
        listener = listener or SampleListener()
        clocks = _Clocks(started=self._clock())
        scan: ScanResult | None = None
        try:
            with self._hw.lock:
                self._home(run, cancel, listener, clocks)
                scan = self._scan(run, cancel, listener, clocks)
        except ScanError as e:
            scan = e.result
            return self._abort(run, cancel, e, clocks, scan)
        except (DeviceError, AnalyzerError) as e:
            return self._abort(run, cancel, e, clocks, scan)
        except Exception as e:  # a bug must not leave the sample running in the store
            _log.exception("sample %s failed unexpectedly", run.sample_id)
            return self._abort(run, cancel, e, clocks, scan, unexpected=True)
        finally:
            self._phase = None
        self._set_phase(run, "reporting", listener)
        try:
            truth = self._hw.truth(run.field_geometries)
            timings = self._timings(clocks, scan)
            report = self._publisher.issue(lambda: run.finish(timings, truth=truth))
        finally:
            self._phase = None
        _log.info(
            "sample %s: %d white cells in %d fields (%s) in %.1f s",
            run.sample_id,
            report.wbc_counted,
            report.fields,
            scan.stop_reason,
            timings.total_s,
        )
        return SampleOutcome(report, scan, timings, homing_s=clocks.homing_s)

    # -- steps -------------------------------------------------------------------------

    def _set_phase(self, run: SampleRun, phase: Phase, listener: SampleListener) -> None:
        self._phase = phase
        listener.on_phase(run.sample_id, phase)

    def _home(
        self, run: SampleRun, cancel: CancelToken, listener: SampleListener, clocks: _Clocks
    ) -> None:
        cancel.check()
        if not self._hw.needs_homing():
            return
        self._set_phase(run, "homing", listener)
        start = self._clock()
        try:
            self._hw.stage.home()
        finally:
            clocks.homing_s = self._clock() - start
        cancel.check()

    def _scan(
        self, run: SampleRun, cancel: CancelToken, listener: SampleListener, clocks: _Clocks
    ) -> ScanResult:
        config = self._hw.config
        acquisition = AcquisitionConfig.model_validate(
            {**config.acquisition.model_dump(), "target_wbc": run.target_wbc}
        )
        scanner = Scanner(
            self._hw.stage, self._hw.camera, acquisition, config.camera, config.stage.limits
        )
        eta = EtaEstimator(run.target_wbc, acquisition.time_budget_s, self._clock)
        self._set_phase(run, "surveying", listener)
        eta.start()
        with scanner.start(cancel, heartbeat=self._acquisition_beat) as scan:
            for image in scan:
                if self._phase != "scanning":
                    self._set_phase(run, "scanning", listener)
                start = self._clock()
                findings = self._analyzer.analyze(image.image, image.pixel_size_um)
                before = run.wbc_counted
                run.add_field(image, findings)
                clocks.analysis_s += self._clock() - start
                scan.report(image, run.wbc_counted - before)
                listener.on_progress(
                    SampleProgress(
                        sample_id=run.sample_id,
                        fields_scanned=run.fields,
                        wbc_found=run.wbc_counted,
                        target_wbc=run.target_wbc,
                        eta_s=eta.update(run.wbc_counted),
                        elapsed_s=round(self._clock() - clocks.started, 1),
                    )
                )
        return scan.result

    def _timings(self, clocks: _Clocks, scan: ScanResult | None) -> Timings:
        total = self._clock() - clocks.started
        acquisition = clocks.homing_s + (scan.timing.acquisition_s if scan else 0.0)
        waiting = scan.timing.analysis_wait_s if scan else 0.0
        return Timings(
            total_s=round(total, 3),
            acquisition_s=round(acquisition, 3),
            analysis_s=round(clocks.analysis_s, 3),
            waiting_s=round(waiting, 3),
        )

    def _abort(
        self,
        run: SampleRun,
        cancel: CancelToken,
        error: BaseException,
        clocks: _Clocks,
        scan: ScanResult | None,
        *,
        unexpected: bool = False,
    ) -> SampleOutcome:
        faults: tuple[str, ...] = ()
        if cancel.cancelled:
            # Whatever the cancel interrupted (a stopped stage raises a DeviceError) is
            # a consequence of it, not a fault of the hardware.
            reason = cancel.reason
        elif isinstance(error, ScanCancelled):
            reason = str(error)
        elif unexpected:
            reason = f"internal error: {type(error).__name__}: {error}"
        elif isinstance(error, ScanError) and isinstance(error.__cause__, DeviceError):
            reason = str(error)
            faults = (str(error.__cause__),)
        elif isinstance(error, DeviceError):
            reason = f"hardware error: {error}"
            faults = (str(error),)
        else:
            reason = str(error)
        timings = self._timings(clocks, scan)
        report = self._publisher.issue(
            lambda: run.abort(reason, timings=timings, hardware_faults=faults)
        )
        return SampleOutcome(
            report, scan, timings, homing_s=clocks.homing_s, hardware_faults=faults
        )

"""The analyzer service: state machine, worker thread, health checks and the systemd watchdog.

Threads:

* the **main thread** runs ``serve()``: a health check every ``service.health_interval_s``
  (or at half the systemd watchdog period if that is shorter), a ``WATCHDOG=1`` ping
  after each check, ``STATUS=`` lines, and it returns when ``request_stop()`` is
  called (signal handlers do that; it is safe there);
* the **worker thread** runs one job at a time: a sample, homing or the self-test;
* the MQTT link's own threads call the ``DaemonCommandHandler``, which only checks
  and enqueues (``start_sample`` answers as soon as the sample is accepted).

States (published retained on ``state``): ``idle``; ``busy`` while a sample runs
(phase 'queued', 'homing', 'surveying', 'scanning', 'reporting', 'aborting');
``maintenance`` while homing or self-testing on request; ``error`` while a health
check fails (phase names the failing part). A sample can start only when idle.

Watchdog policy: a failing health check does *not* stop the pings. It publishes a
fault on ``events`` and sets ``error``; the next checks keep trying to recover the
device (reopen the port or the camera) and the state returns to ``idle`` when they
pass. Restarting would not fix an unplugged cable, and systemd's start limit would
soon give up on the unit altogether. The pings stop only when the daemon itself is
broken: the main loop no longer runs (so nothing pings), or a worker thread it
depends on died or hangs (``WorkerWatch``: the MQTT command intake and link
threads, the job worker, the scan's acquisition thread), which includes a job that
has outlived its own limits (scan time budget plus stall timeout, homing timeout)
by ``service.stuck_grace_s``. Then systemd restarts the daemon, and the sample it
was running is reported as aborted at the next start.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from agent import __version__
from agent.acquisition.cancel import CancelToken
from agent.config import AgentConfig
from agent.daemon import maintenance
from agent.daemon.command_handler import DaemonCommandHandler
from agent.daemon.delivery import ReportPublisher
from agent.daemon.hardware import Hardware, HardwareStartError, open_hardware
from agent.daemon.health import HealthChecker, HealthReport, model_files
from agent.daemon.progress import SampleProgress, ServiceListener
from agent.daemon.sample_runner import SampleListener, SampleRunner
from agent.daemon.sdnotify import SystemdNotifier, watchdog_interval_s
from agent.daemon.workers import WorkerWatch
from agent.errors import AnalyzerError, InputError
from agent.heartbeat import Heartbeat, WorkerFault
from agent.report.model import SCHEMA_VERSION, Report
from agent.report.service import ReportService, SampleRun
from agent.transport.commands import COMMAND_NAMES, StartSampleArgs
from agent.transport.link import MqttLink
from agent.transport.outbox import Outbox
from agent.transport.payloads import (
    AnalyzerState,
    EventPayload,
    InfoPayload,
    ModelInfo,
    ProgressPayload,
    Severity,
    StatePayload,
)
from agent.vision.classifier import MODEL_NAME as CLASSIFIER_NAME
from agent.vision.detector import MODEL_NAME as DETECTOR_NAME
from agent.vision.field_analysis import FieldAnalyzer
from agent.vision.model_card import shipped_models_dir

_log = logging.getLogger(__name__)

HARDWARE_CHECKS = frozenset({"stage", "camera"})

WORKERS_PHASE = "workers"
"""The ``error`` state's phase while a worker thread is dead or stuck."""

STOP_REASON = "daemon stopped"
"""The reason in the aborted report of a sample interrupted by SIGTERM/SIGINT."""

CAPABILITIES = ("fhir-r4", "cell-images", "reclassify")

JobKind = Literal["sample", "home", "self_test"]


@dataclass
class Job:
    kind: JobKind
    limit_s: float
    """How long the job may take by its own limits (s); beyond it plus grace it is stuck."""
    run: SampleRun | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    started: float | None = None

    @property
    def sample_id(self) -> str | None:
        return self.run.sample_id if self.run is not None else None


class AnalyzerService:
    """The daemon; build it with ``open_service``. See the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        hardware: Hardware,
        analyzer: FieldAnalyzer,
        reports: ReportService,
        outbox: Outbox,
        *,
        notifier: SystemdNotifier | None = None,
        wake: queue.SimpleQueue[str] | None = None,
    ) -> None:
        self.config = config
        self.hardware = hardware
        self.analyzer = analyzer
        self.reports = reports
        self.outbox = outbox
        self._notifier = notifier or SystemdNotifier(socket_path="")
        self._wake: queue.SimpleQueue[str] = wake if wake is not None else queue.SimpleQueue()
        self.link = MqttLink(config.mqtt, config.device_id, outbox, DaemonCommandHandler(self))
        self.publisher = ReportPublisher(reports, self.link, config.storage.state_dir)
        acquisition_beat = Heartbeat("acquisition")
        self.runner = SampleRunner(
            hardware, analyzer, self.publisher, acquisition_beat=acquisition_beat
        )
        models_dir = config.vision.models_dir or shipped_models_dir()
        self.health = HealthChecker(
            hardware,
            model_files(
                models_dir,
                [analyzer.detector.card, analyzer.classifier.card],
                [DETECTOR_NAME, CLASSIFIER_NAME],
            ),
            config.storage.state_dir,
            outbox,
        )
        self._lock = threading.Lock()
        self._state = StatePayload(state="idle")
        self._job: Job | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self._worker_beat = Heartbeat("job worker")
        self.workers = WorkerWatch(config.service.worker_stall_s)
        self.workers.add(*self.link.heartbeats, self._worker_beat, acquisition_beat)
        self._worker_faults: dict[str, WorkerFault] = {}
        """Worker threads found dead or stuck at the last check: name -> fault."""
        self._listeners: list[ServiceListener] = []
        self._fault: str | None = None
        self._failing: dict[str, str] = {}
        """Health checks failing at the last check: code -> message."""
        self._stopping = False
        self._started = False
        self._closed = False
        self._last_progress = -math.inf
        self._last_status = ""

    # -- lifecycle ---------------------------------------------------------------------

    def add_listener(self, listener: ServiceListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Recover what a previous run left, check health, go online, tell systemd READY.

        Raises ``HardwareStartError`` when the start-up health check fails.
        """
        self._recover()
        report = self.health.check(hardware=True, recover=False)
        if not report.ok:
            raise HardwareStartError(f"start-up health check failed: {report.summary()}")
        self._worker_beat.attach(self._worker)
        self._worker.start()
        self._started = True
        self.link.publish_info(self._info())
        self.link.publish_state(self._state)
        self.link.start()
        status = self._status_line()
        _log.info("ready: %s", status)
        self._notifier.ready(status)
        self._last_status = status

    def serve(self) -> None:
        """Run health checks and ping the watchdog until ``request_stop()``."""
        period = self._check_period()
        while True:
            try:
                message = self._wake.get(timeout=period)
            except queue.Empty:
                message = "tick"
            if message == "stop":
                return
            self.tick()

    def request_stop(self) -> None:
        """Make ``serve()`` return. Safe to call from a signal handler."""
        self._wake.put("stop")

    def shutdown(self, reason: str = STOP_REASON) -> None:
        """Abort a running sample (aborted report), say 'stopped', release everything."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stopping = True
            job = self._job
        if job is not None:
            _log.warning("stopping: cancelling the running %s", job.kind)
            job.cancel.cancel(reason)
            self.runner.interrupt()
        if self._started:
            self._jobs.put(None)
            self._worker.join(self.config.service.shutdown_timeout_s)
            if self._worker.is_alive():
                _log.error(
                    "the running %s did not stop within %g s (service.shutdown_timeout_s); "
                    "it is reported as aborted at the next start",
                    job.kind if job else "job",
                    self.config.service.shutdown_timeout_s,
                )
        self.link.stop()
        self.hardware.close()
        self.reports.close()
        self.outbox.close()
        _log.info("stopped")

    def drain_outbox(self, timeout_s: float) -> bool:
        """Wait until every queued result is acknowledged (connected only); True if done."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.count() == 0:
                return True
            if not self.link.connected:
                return False
            time.sleep(0.05)
        return self.outbox.count() == 0

    # -- the main loop's work ------------------------------------------------------------

    def tick(self) -> HealthReport:
        """One health check, then the watchdog ping unless a worker thread died or hangs."""
        with self._lock:
            busy = self._job is not None
        report = self.health.check(hardware=not busy)
        workers = self._check_workers()
        self._apply_health(report, workers)
        if not workers:
            self._notifier.watchdog()
        status = self._status_line()
        if status != self._last_status:
            self._notifier.status(status)
            self._last_status = status
        return report

    def _check_period(self) -> float:
        period = self.config.service.health_interval_s
        watchdog = watchdog_interval_s()
        return min(period, watchdog) if watchdog is not None else period

    def _apply_health(self, report: HealthReport, workers: Sequence[WorkerFault] = ()) -> None:
        """Publish newly failing checks, set or clear the error state."""
        failing = {p.code: p.message for p in report.problems}
        if not report.hardware_checked:
            # Not probed this time (a job holds the hardware): earlier hardware faults stand.
            for code in HARDWARE_CHECKS & self._failing.keys() - failing.keys():
                failing[code] = self._failing[code]
        for code in failing.keys() - self._failing.keys():
            _log.error("health check failed: %s: %s", code, failing[code])
            self._event(f"health.{code}", "error", failing[code])
        self._failing = failing
        faults = dict(failing)
        if workers:
            faults[WORKERS_PHASE] = "; ".join(f.message for f in workers)
        with self._lock:
            recovered = not faults and self._fault is not None
            if faults:
                self._fault = "; ".join(f"{code}: {message}" for code, message in faults.items())
            elif recovered:
                self._fault = None
            idle = self._job is None
        if recovered:
            _log.info("health checks pass again")
            self._event("health.recovered", "info", "all health checks pass again")
        if workers:
            # Also over a running job: a dead or hung thread will not finish it.
            self._set_state("error", phase=WORKERS_PHASE)
        elif idle:
            if failing:
                self._set_state("error", phase=next(iter(failing)))
            else:
                self._set_state("idle")

    def _check_workers(self) -> list[WorkerFault]:
        """Dead or stuck worker threads; each new one is logged and published once."""
        faults = self.workers.faults()
        with self._lock:
            sample_id = self._job.sample_id if self._job is not None else None
        for fault in faults:
            known = self._worker_faults.get(fault.name)
            if known is not None and known.kind == fault.kind:
                continue
            message = (
                f"{fault.message}; the daemon stops pinging the watchdog so that systemd "
                "restarts it"
            )
            _log.critical("%s", message)
            code = "daemon.stuck" if fault.kind == "stuck" else "daemon.thread_died"
            self._event(code, "critical", message, sample_id=sample_id)
        self._worker_faults = {f.name: f for f in faults}
        return faults

    # -- commands (the link's command thread; must return quickly) ------------------------

    @property
    def state(self) -> StatePayload:
        with self._lock:
            return self._state

    def start_sample(self, args: StartSampleArgs) -> dict[str, Any]:
        acq = self.config.acquisition
        limit = acq.time_budget_s + acq.stall_timeout_s + self.config.stage.homing_timeout_s
        with self._lock:
            self._refuse_unless_idle("start a sample", allow_error=False)
            run = self.reports.begin_sample(args.sample_id, args.accession, args.target_wbc)
            job = Job("sample", limit, run=run)
            self._job = job
        self._set_state("busy", sample_id=run.sample_id, phase="queued")
        self._jobs.put(job)
        return {"accepted": True, "sample_id": run.sample_id, "target_wbc": run.target_wbc}

    def abort_sample(self, sample_id: str | None, reason: str) -> str:
        with self._lock:
            job = self._job
            if job is None or job.run is None:
                raise InputError("no sample is running")
            if sample_id is not None and sample_id != job.run.sample_id:
                raise InputError(
                    f"sample {sample_id!r} is not running (the running sample is "
                    f"{job.run.sample_id!r})"
                )
            if job.cancel.cancelled:
                return job.run.sample_id
            job.cancel.cancel(reason)
        _log.warning("sample %s: %s", job.run.sample_id, reason)
        # Stopping a homing stage waits for the controller's reset: not on this thread.
        threading.Thread(target=self.runner.interrupt, name="interrupt", daemon=True).start()
        self._set_state("busy", sample_id=job.run.sample_id, phase="aborting")
        return job.run.sample_id

    def enqueue_maintenance(self, kind: str) -> None:
        if kind not in ("home", "self_test"):
            raise InputError(f"unknown maintenance job {kind!r}")
        limit = self.config.stage.homing_timeout_s + (
            0.0
            if kind == "home"
            else self.config.camera.capture_timeout_s + self.config.stage.command_timeout_s
        )
        with self._lock:
            self._refuse_unless_idle("home the stage" if kind == "home" else "run the self-test")
            job = Job("home" if kind == "home" else "self_test", limit)
            self._job = job
        self._set_state("maintenance", phase="homing" if kind == "home" else "self_test")
        self._jobs.put(job)

    def republish(self, sample_id: str) -> Report:
        report = self.reports.latest_result(sample_id)
        self.publisher.republish(report)
        _log.info("result %s of sample %s queued again", report.result_id, sample_id)
        return report

    def cell_image(self, sample_id: str, cell_id: int) -> bytes:
        return self.reports.get_cell_image(sample_id, cell_id)

    def reclassify(self, sample_id: str, cell_id: int, label: str, reviewer: str) -> Report:
        return self.publisher.issue(
            lambda: self.reports.reclassify(sample_id, cell_id, label, reviewer)
        )

    def finalize(self, sample_id: str, reviewer: str) -> Report:
        return self.publisher.issue(lambda: self.reports.finalize(sample_id, reviewer))

    def _refuse_unless_idle(self, what: str, *, allow_error: bool = True) -> None:
        """Called with the lock held."""
        if self._stopping:
            raise InputError(f"cannot {what}: the analyzer is shutting down")
        job = self._job
        if job is not None:
            doing = f"sample {job.sample_id} is running" if job.run else f"{job.kind} is running"
            raise InputError(f"busy: cannot {what}, {doing}")
        if self._fault is not None and not allow_error:
            raise InputError(f"cannot {what}: the analyzer is in error ({self._fault})")

    # -- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        beat = self._worker_beat
        while True:
            job = self._jobs.get()
            if job is None:
                beat.finished()
                return
            job.started = time.monotonic()
            beat.working(job.limit_s + self.config.service.stuck_grace_s)
            try:
                self._run_job(job)
            except Exception as e:  # the worker must survive anything a job does
                _log.exception("the %s job failed", job.kind)
                self._event(
                    f"{job.kind}.failed",
                    "error",
                    f"{job.kind} failed: {e}",
                    sample_id=job.sample_id,
                )
                with self._lock:
                    self._fault = f"{job.kind} failed: {e}"
            finally:
                with self._lock:
                    self._job = None
                    state: AnalyzerState = "error" if self._fault is not None else "idle"
                    phase = "fault" if self._fault is not None else None
                self._set_state(state, phase=phase)
                self._wake.put("check")
                beat.idle()

    def _run_job(self, job: Job) -> None:
        if job.run is not None:
            self._run_sample(job, job.run)
            return
        if job.kind == "home":
            result = maintenance.home(self.hardware)
        else:
            result = maintenance.self_test(self.hardware, self.health, self.analyzer)
        self._event(result.code, "info" if result.ok else "error", result.message)
        if not result.ok:
            with self._lock:
                self._fault = result.message

    def _run_sample(self, job: Job, run: SampleRun) -> None:
        service = self

        class Relay(SampleListener):
            def on_phase(self, sample_id: str, phase: str) -> None:
                if not job.cancel.cancelled:
                    service._set_state("busy", sample_id=sample_id, phase=phase)

            def on_progress(self, progress: SampleProgress) -> None:
                service._progress(progress)

        outcome = self.runner.run(run, job.cancel, Relay())
        report = outcome.report
        if outcome.aborted:
            severity: Severity = "error" if outcome.hardware_faults else "warning"
            code = "sample.hardware_fault" if outcome.hardware_faults else "sample.aborted"
            self._event(code, severity, f"sample aborted: {report.reason}", sample_id=run.sample_id)
            if outcome.hardware_faults:
                with self._lock:
                    self._fault = "; ".join(outcome.hardware_faults)
        for listener in self._listeners:
            listener.on_outcome(outcome)

    def _progress(self, progress: SampleProgress) -> None:
        for listener in self._listeners:
            listener.on_progress(progress)
        now = time.monotonic()
        if now - self._last_progress < self.config.service.progress_interval_s:
            return
        self._last_progress = now
        self.link.publish_progress(
            ProgressPayload(
                sample_id=progress.sample_id,
                fields_scanned=progress.fields_scanned,
                wbc_found=progress.wbc_found,
                target_wbc=progress.target_wbc,
                eta_s=progress.eta_s,
            )
        )

    # -- publishing ----------------------------------------------------------------------

    def _set_state(
        self, state: AnalyzerState, *, sample_id: str | None = None, phase: str | None = None
    ) -> None:
        with self._lock:
            current = self._state
            if (current.state, current.sample_id, current.phase) == (state, sample_id, phase):
                return
            new = StatePayload(state=state, sample_id=sample_id, phase=phase)
            self._state = new
        _log.info(
            "state %s%s%s",
            state,
            f" {sample_id}" if sample_id else "",
            f" ({phase})" if phase else "",
        )
        self.link.publish_state(new)
        for listener in self._listeners:
            listener.on_state(new)

    def _event(
        self, code: str, severity: Severity, message: str, *, sample_id: str | None = None
    ) -> None:
        try:
            self.link.publish_event(
                EventPayload(
                    code=code, severity=severity, message=message[:2000], sample_id=sample_id
                )
            )
        except AnalyzerError as e:
            _log.error("could not queue the event %s: %s", code, e)

    def _info(self) -> InfoPayload:
        cards = (self.analyzer.detector.card, self.analyzer.classifier.card)
        capabilities = list(CAPABILITIES)
        if self.hardware.simulated:
            capabilities.append("simulator")
        return InfoPayload(
            device_id=self.config.device_id,
            software_version=__version__,
            result_schema_version=SCHEMA_VERSION,
            models=[ModelInfo(name=c.name, version=c.version, sha256=c.sha256) for c in cards],
            capabilities=capabilities,
            commands=list(COMMAND_NAMES),
        )

    def _status_line(self) -> str:
        state = self.state
        text: str = state.state
        if state.sample_id:
            text += f" {state.sample_id}"
        if state.phase:
            text += f" ({state.phase})"
        fault = self._fault
        if fault:
            text += f": {fault}"
        if not self.config.mqtt.enabled:
            mqtt = "MQTT disabled"
        elif self.link.connected:
            mqtt = "MQTT connected"
        else:
            mqtt = f"MQTT not connected ({self.link.last_error or 'connecting'})"
        try:
            waiting = self.outbox.count()
        except AnalyzerError:
            waiting = -1
        outbox = "outbox unreadable" if waiting < 0 else f"{waiting} message(s) in the outbox"
        return f"{text}; {mqtt}; {outbox}"

    def _recover(self) -> None:
        """Aborted reports for samples a killed daemon left running; queue unqueued reports."""
        recovered = self.reports.recover_incomplete()
        queued = self.publisher.catch_up()
        for report in recovered:
            _log.warning("sample %s was interrupted: reported as aborted", report.sample_id)
            self._event(
                "sample.aborted",
                "warning",
                f"sample aborted: {report.reason}",
                sample_id=report.sample_id,
            )
        if queued:
            _log.info("%d stored report(s) queued for delivery", len(queued))


def open_service(
    config: AgentConfig,
    *,
    notifier: SystemdNotifier | None = None,
    wake: queue.SimpleQueue[str] | None = None,
) -> AnalyzerService:
    """Load the models, open the sample store and the outbox, then the hardware.

    Each step's failure is one clear ``AnalyzerError``/``DeviceError``; whatever was
    already open is closed again.
    """
    state_dir = config.storage.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnalyzerError(
            f"cannot create the state directory {state_dir}: {e.strerror or e}"
        ) from e
    analyzer = FieldAnalyzer.load(config.vision.models_dir, config.vision.threads)
    with _closing_on_error() as cleanup:
        reports = ReportService(config, [analyzer.detector.card, analyzer.classifier.card])
        cleanup.append(reports.close)
        outbox = Outbox.in_state_dir(state_dir)
        cleanup.append(outbox.close)
        hardware = open_hardware(config)
        cleanup.append(hardware.close)
        return AnalyzerService(
            config, hardware, analyzer, reports, outbox, notifier=notifier, wake=wake
        )


@contextmanager
def _closing_on_error() -> Iterator[list[Any]]:
    steps: list[Any] = []
    try:
        yield steps
    except BaseException:
        for step in reversed(steps):
            try:
                step()
            except Exception:
                _log.exception("cleanup after a failed start")
        raise

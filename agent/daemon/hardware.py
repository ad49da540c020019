"""The analyzer's hardware as the daemon holds it: stage, camera and (optionally) the simulator.

With a ``simulator`` section the in-process simulated analyzer is started first and
the stage and camera are opened on it through the real driver code (the GRBL driver
over its pseudo-terminal). That is chosen in the config, never as a fallback: a real
analyzer whose controller does not answer fails to start with a clear message.

``lock`` serialises hardware use between the worker (samples, homing, self-test) and
the main loop's health check, which only probes the hardware when the lock is free.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.config import AgentConfig
from agent.errors import AnalyzerError
from agent.report.dedup import FieldGeometry, truth_in_fields
from drivers.camera.base import Camera
from drivers.camera.factory import open_camera
from drivers.errors import DeviceConnectionError, DeviceError
from drivers.stage.base import Position
from drivers.stage.factory import RecoverableStage, build_stage

if TYPE_CHECKING:
    from drivers.sim.analyzer import SimulatedAnalyzer

_log = logging.getLogger(__name__)


class HardwareStartError(AnalyzerError):
    """The stage or camera cannot be reached at start-up (the daemon exits; systemd retries)."""


@runtime_checkable
class HomingAware(Protocol):
    """A stage driver that knows whether its position can be trusted (GRBL's does)."""

    @property
    def homed(self) -> bool: ...


@dataclass
class Hardware:
    """An open stage and camera, and the simulated analyzer behind them if configured."""

    config: AgentConfig
    stage: RecoverableStage
    camera: Camera
    simulator: SimulatedAnalyzer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    @property
    def simulated(self) -> bool:
        return self.simulator is not None

    def needs_homing(self) -> bool:
        """True when the stage must be homed before a scan (config, or position unknown)."""
        if self.config.stage.home_on_start:
            return True
        return not self.stage.homed if isinstance(self.stage, HomingAware) else True

    def probe_stage(self) -> Position:
        """Ask the controller for its position (a real-time status query); raises DeviceError."""
        position = self.stage.position()
        if not all(math.isfinite(v) for v in (position.x_um, position.y_um, position.z_um)):
            raise DeviceConnectionError(
                f"the stage reports a position that is not a number: {position}"
            )
        return position

    def probe_camera(self) -> None:
        """Capture one frame and check its size; raises DeviceError."""
        frame = self.camera.capture()
        height, width = frame.image.shape[:2]
        expected = (self.config.camera.width, self.config.camera.height)
        if (width, height) != expected:
            raise DeviceConnectionError(
                f"the camera delivered a {width}x{height} frame, expected "
                f"{expected[0]}x{expected[1]}"
            )

    def reconnect_stage(self) -> None:
        """One attempt to reopen the controller's link (bounded by stage.connect_timeout_s)."""
        self.stage.close()
        self.stage.connect()

    def reopen_camera(self) -> None:
        """Close the camera and open it again (after a failed capture)."""
        try:
            self.camera.close()
        except DeviceError as e:
            _log.warning("closing the failed camera: %s", e)
        self.camera = open_camera(self.config.camera, self.simulator)

    def truth(self, fields: Sequence[FieldGeometry]) -> dict[str, int] | None:
        """Simulator only: class counts of the slide's objects centred in ``fields``."""
        if self.simulator is None:
            return None
        from drivers.sim.smear import Rect

        seen: dict[str, tuple[float, float, str]] = {}
        slide = self.simulator.slide
        for f in fields:
            x0, y0, x1, y1 = f.slide_bounds()
            for cell in slide.cells_in(Rect(x0, y0, x1, y1)):
                seen[cell.id] = (cell.x_um, cell.y_um, cell.cls)
        return truth_in_fields(seen.values(), fields)

    def close(self) -> None:
        """Switch the LED off and release everything. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _close_all(
            [
                ("LED", lambda: self.stage.set_led(0)),
                ("camera", self.camera.close),
                ("stage", self.stage.close),
            ]
        )
        if self.simulator is not None:
            self.simulator.stop()


def _close_all(steps: Iterable[tuple[str, Callable[[], object]]]) -> None:
    for name, step in steps:
        try:
            step()
        except (DeviceError, OSError) as e:
            _log.warning("closing the %s: %s", name, e)


def open_hardware(config: AgentConfig) -> Hardware:
    """Start the simulator (if configured), connect the stage and open the camera.

    Raises ``HardwareStartError`` with one line saying which device failed and why (or
    the simulator's ``DeviceError``, e.g. an unusable cell library).
    """
    simulator: SimulatedAnalyzer | None = None
    if config.simulator is not None:
        from drivers.sim.analyzer import SimulatedAnalyzer

        simulator = SimulatedAnalyzer(config.simulator, config.camera, config.stage.limits)
        simulator.start()
    stage: RecoverableStage | None = None
    try:
        port = simulator.port_path if simulator is not None else None
        stage = build_stage(config.stage, simulator_port=port)
        try:
            stage.connect()
        except DeviceError as e:
            raise HardwareStartError(f"stage controller on {config.stage.port}: {e}") from e
        try:
            camera = open_camera(config.camera, simulator)
        except DeviceError as e:
            raise HardwareStartError(f"camera ({config.camera.type}): {e}") from e
    except BaseException:
        if stage is not None:
            _close_all([("stage", stage.close)])
        if simulator is not None:
            simulator.stop()
        raise
    return Hardware(config=config, stage=stage, camera=camera, simulator=simulator)

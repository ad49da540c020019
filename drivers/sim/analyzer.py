"""The simulated analyzer: virtual GRBL controller + virtual slide + virtual camera, wired up.

The controller speaks real GRBL bytes on a pseudo-terminal, so the real stage driver
runs unchanged against it; the camera renders the slide at the controller's true
position with its LED level. Used in-process by tests and ``make run`` (the daemon
asks :meth:`SimulatedAnalyzer.open_camera` for its camera and opens
:attr:`SimulatedAnalyzer.port_path` as its serial port), and as a process of its own
by ``algocyte-agent sim`` (which adds a frame server).
"""

from __future__ import annotations

import logging
from types import TracebackType

from drivers.camera.config import CameraConfig
from drivers.sim.camera_model import VirtualCamera
from drivers.sim.cell_library import CellLibrary
from drivers.sim.config import SimulatorConfig
from drivers.sim.frame_server import FrameServer
from drivers.sim.optics import FocalSurface
from drivers.sim.slide import VirtualSlide
from drivers.sim.virtual_grbl import VirtualGrblController
from drivers.stage.config import StageLimits

_log = logging.getLogger(__name__)


class SimulatedAnalyzer:
    """The whole simulated instrument. Use as a context manager, or ``start()``/``stop()``.

    Args:
        config: the ``simulator`` section.
        camera: the ``camera`` section (sensor mode of the cameras handed out).
        stage_limits: the stage's soft limits; the virtual controller's travel matches them.
        library: an already loaded cell library (else ``config.cell_library`` is read).
    """

    def __init__(
        self,
        config: SimulatorConfig,
        camera: CameraConfig | None = None,
        stage_limits: StageLimits | None = None,
        *,
        library: CellLibrary | None = None,
    ) -> None:
        self.config = config
        self.camera_config = camera or CameraConfig(type="simulated")
        self.slide = VirtualSlide(config, library)
        self.focal_surface = FocalSurface(config.optics, self.slide.smear_extent())
        self.controller = VirtualGrblController(timing=config.controller, limits=stage_limits)
        self._servers: list[FrameServer] = []
        self._cameras: list[VirtualCamera] = []
        self._started = False

    def start(self) -> SimulatedAnalyzer:
        """Power the virtual controller on (idempotent)."""
        if not self._started:
            self.controller.start()
            self._started = True
            _log.info(
                "simulated analyzer up: stage on %s, slide seed %d, cells from %s",
                self.port_path,
                self.slide.seed,
                self.slide.library.root,
            )
        return self

    def stop(self) -> None:
        """Stop frame servers, cameras and the controller. Safe to call twice."""
        for server in self._servers:
            server.stop()
        self._servers.clear()
        for cam in self._cameras:
            cam.close()
        self._cameras.clear()
        if self._started:
            self.controller.stop()
            self._started = False

    def __enter__(self) -> SimulatedAnalyzer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port_path(self) -> str:
        """The serial port of the virtual controller (a stable symlink to its pty)."""
        return self.controller.port_path

    def open_camera(self) -> VirtualCamera:
        """A new camera on this analyzer's slide and stage (its own settings and noise)."""
        cam = VirtualCamera(
            self.slide,
            self.controller,
            self.config.optics,
            width=self.camera_config.width,
            height=self.camera_config.height,
        )
        self._cameras = [c for c in self._cameras if not c.closed] + [cam]
        return cam

    def best_focus_z(self, x_um: float, y_um: float) -> float:
        """The true best-focus stage z at slide point (x, y) (um)."""
        return self.focal_surface.z_at(x_um, y_um)

    def serve_camera(self, address: str) -> str:
        """Serve a camera at ``address`` for other processes; returns the bound address."""
        server = FrameServer(self.open_camera(), address)
        bound = server.start()
        self._servers.append(server)
        return bound

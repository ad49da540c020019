"""A camera wrapper that remembers where the simulated stage truly was for each frame.

Autofocus and scan evaluations need the controller's true position at capture time
(not the position the driver believes), to measure focus error against the virtual
slide's focal surface. Only the simulator knows it, so this lives beside it.
"""

from __future__ import annotations

from drivers.camera.base import Camera, CameraSettings, Frame
from drivers.sim.analyzer import SimulatedAnalyzer
from drivers.stage.base import Position


class TruthRecordingCamera:
    """A ``Camera`` that delegates to the real one and records the true stage position."""

    def __init__(self, camera: Camera, analyzer: SimulatedAnalyzer) -> None:
        self._camera = camera
        self._analyzer = analyzer
        self.positions: dict[float, Position] = {}
        """True stage position at each capture, by the frame's timestamp."""

    def configure(self, settings: CameraSettings) -> None:
        self._camera.configure(settings)

    def capture(self) -> Frame:
        frame = self._camera.capture()
        self.positions[frame.metadata.timestamp] = self._analyzer.controller.true_position()
        return frame

    def close(self) -> None:
        self._camera.close()

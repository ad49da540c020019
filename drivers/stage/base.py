"""The stage interface every stage driver implements (GRBL today, others as one module each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Position:
    """A stage position in micrometres of machine coordinates.

    By convention the slide coordinate of the field centre equals the stage position,
    image +x is stage +x and image +y is stage +y; the simulator follows the same
    convention so field pixels map to slide coordinates with the pixel size alone.
    """

    x_um: float
    y_um: float
    z_um: float


class Stage(Protocol):
    """A motorized XYZ stage with an LED on its controller's PWM output.

    Every blocking call has a timeout from the stage config; errors are
    ``drivers.errors.DeviceError`` subclasses whose message is meant for an operator.
    """

    def connect(self) -> None:
        """Open the link, wake the controller, read its banner and check the firmware."""

    def home(self) -> None:
        """Run the homing cycle and wait until it ends."""

    def move_to(
        self,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Absolute move; axes given as None stay put. Refused before sending if outside limits."""

    def move_by(
        self, dx_um: float = 0.0, dy_um: float = 0.0, dz_um: float = 0.0, *, wait: bool = True
    ) -> None:
        """Relative move, checked against the soft limits like ``move_to``."""

    def wait_idle(self) -> Position:
        """Block until motion has ended; return where the stage is."""

    def position(self) -> Position:
        """The current machine position."""

    def set_led(self, level: int) -> None:
        """LED brightness 0-1000 (0 switches it off)."""

    def stop(self) -> None:
        """Stop now (feed hold, then soft reset); the stage must be homed again after."""

    def close(self) -> None:
        """Release the port. Safe to call twice."""

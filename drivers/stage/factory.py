"""Build the configured stage driver: one entry per protocol in ``stage.protocol``.

A new controller protocol (e.g. an OpenFlexure Sangaboard) is one driver module plus
one entry in ``_BUILDERS``; the driver gets a ``ByteLink`` and never opens ports itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from drivers.errors import DeviceConnectionError, UnsupportedFeatureError
from drivers.serial_link import SerialLink
from drivers.stage.base import Stage
from drivers.stage.config import SIMULATOR_PORT, StageConfig
from drivers.stage.grbl import GrblStage


class RecoverableStage(Stage, Protocol):
    """A stage that can reopen its link after the device vanished and came back."""

    def reconnect(self) -> None:
        """Reopen the same port (bounded attempts from config); home again afterwards."""


def _build_grbl(config: StageConfig, port: str) -> RecoverableStage:
    return GrblStage(SerialLink(port, config.baudrate), config)


_BUILDERS: dict[str, Callable[[StageConfig, str], RecoverableStage]] = {
    "grbl": _build_grbl,
}


def build_stage(config: StageConfig, *, simulator_port: str | None = None) -> RecoverableStage:
    """The stage driver for ``config``, not connected yet (call ``connect()``).

    Args:
        config: the ``stage`` section.
        simulator_port: the virtual controller's ``port_path``; required when
            ``stage.port`` is ``'simulator'``, ignored otherwise.
    """
    port = config.port
    if port == SIMULATOR_PORT:
        if simulator_port is None:
            raise DeviceConnectionError(
                f"stage.port is '{SIMULATOR_PORT}' but no simulated controller is running "
                "(start drivers.sim.virtual_grbl.VirtualGrblController and pass its port_path)"
            )
        port = simulator_port
    builder = _BUILDERS.get(config.protocol)
    if builder is None:
        raise UnsupportedFeatureError(
            f"stage.protocol '{config.protocol}' has no driver (known: {sorted(_BUILDERS)})"
        )
    return builder(config, port)

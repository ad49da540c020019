"""The root of the configuration: one section per subsystem, cross-checked together."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.acquisition.config import AcquisitionConfig
from agent.daemon.config import ServiceConfig
from agent.report.config import StorageConfig
from agent.transport.config import MqttConfig
from agent.vision.config import VisionConfig
from drivers.camera.config import CameraConfig
from drivers.config_model import StrictModel
from drivers.sim.config import SimulatorConfig
from drivers.stage.config import SIMULATOR_PORT, StageConfig

LogLevel = Literal["debug", "info", "warning", "error"]


class AgentConfig(StrictModel):
    """Everything an operator can change, in one validated file."""

    device_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of this analyzer; used in MQTT topics and result provenance.",
    )
    log_level: LogLevel = Field(default="info", description="Least severe level logged.")
    simulator: SimulatorConfig | None = Field(
        default=None,
        description=(
            "Present to run on the simulated analyzer. Simulation is chosen here explicitly; "
            "the agent never falls back to it when hardware is missing."
        ),
    )
    stage: StageConfig = Field(default_factory=StageConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

    @model_validator(mode="after")
    def _simulation_is_explicit(self) -> AgentConfig:
        uses_sim = []
        if self.stage.port == SIMULATOR_PORT:
            uses_sim.append(f"stage.port is '{SIMULATOR_PORT}'")
        if self.camera.type == "simulated" and not self.camera.device:
            # With a device address the camera is another process's ('algocyte-agent sim').
            uses_sim.append("camera.type is 'simulated'")
        if uses_sim and self.simulator is None:
            raise ValueError(
                " and ".join(uses_sim) + " but there is no simulator section; add 'simulator: {}'"
            )
        return self

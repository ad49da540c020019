"""Configuration of the simulated analyzer (virtual controller, slide and camera)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from drivers.config_model import StrictModel


class SimulatorConfig(StrictModel):
    """The simulated analyzer. Present in a config only when simulation is wanted."""

    seed: int = Field(
        default=1, ge=0, description="Seed of the virtual slide: same seed, same slide."
    )
    cell_library: Path | None = Field(
        default=None,
        description=(
            "Directory of white-cell images, one subfolder per class; empty for the demo "
            "library shipped with the agent."
        ),
    )
    rbc_per_wbc: float = Field(
        default=700.0,
        ge=20,
        le=100_000,
        description="Red cells per white cell on the virtual smear (sets the white-cell density).",
    )

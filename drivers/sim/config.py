"""Configuration of the simulated analyzer (virtual controller, slide and camera)."""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from drivers.config_model import StrictModel
from drivers.sim.controller_config import VirtualControllerConfig

DEFAULT_CLASS_MIX: dict[str, float] = {
    "neutrophil": 58.0,
    "lymphocyte": 30.0,
    "monocyte": 6.0,
    "eosinophil": 3.0,
    "basophil": 1.0,
    "ig": 2.0,
    "erythroblast": 1.0,
    "platelet": 8.0,
}
"""A normal adult differential (per 100 white cells) plus a few NRBCs and platelet clumps."""

DEFAULT_NOT_WHITE = ("erythroblast", "platelet")


class SmearConfig(StrictModel):
    """Where the smear lies on the slide and where its zones are (um, slide = stage coordinates).

    Along x the smear runs from the drop (thick, red cells piled up) through the monolayer
    (the reading zone) to the thin feathered end and then clear glass. The feathered edge
    is tongue-shaped: towards the smear's long sides every zone ends earlier by up to
    ``edge_recess_um``, so zone boundaries are curved and must be checked field by field.
    """

    x_start_um: float = Field(default=15_000.0, description="Drop end: the smear starts here (um).")
    thick_end_um: float = Field(
        default=24_000.0, description="The thick zone (overlapping red cells) ends here (um)."
    )
    monolayer_end_um: float = Field(
        default=44_000.0, description="The monolayer (reading zone) ends here (um)."
    )
    feather_end_um: float = Field(
        default=50_000.0, description="The thin feathered end ends here; clear glass beyond (um)."
    )
    y_min_um: float = Field(default=4_000.0, description="Lower long side of the smear (um).")
    y_max_um: float = Field(default=21_000.0, description="Upper long side of the smear (um).")
    edge_recess_um: float = Field(
        default=3_000.0,
        ge=0,
        le=50_000,
        description="How much earlier the zones end at the smear's long sides than on its axis (um).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SmearConfig:
        xs = [self.x_start_um, self.thick_end_um, self.monolayer_end_um, self.feather_end_um]
        if any(a >= b for a, b in itertools.pairwise(xs)):
            raise ValueError(
                "expected x_start_um < thick_end_um < monolayer_end_um < feather_end_um, got "
                + " < ".join(f"{x:g}" for x in xs)
            )
        if self.y_min_um >= self.y_max_um:
            raise ValueError(f"y_min_um ({self.y_min_um}) must be below y_max_um ({self.y_max_um})")
        if self.monolayer_end_um - self.thick_end_um <= self.edge_recess_um:
            raise ValueError(
                f"the monolayer ({self.thick_end_um:g} to {self.monolayer_end_um:g}) must be longer "
                f"than edge_recess_um ({self.edge_recess_um:g}) so part of it spans the whole width"
            )
        return self


class OpticsConfig(StrictModel):
    """The virtual microscope and sensor: scale, focus, illumination and noise."""

    pixel_size_um: float = Field(
        default=0.2,
        gt=0.02,
        le=2.0,
        description=(
            "True size of a camera pixel at the slide (um/px); camera.pixel_size_um is what the "
            "agent believes, so a mismatch tests calibration."
        ),
    )
    focus_z_um: float = Field(
        default=2_500.0, description="Best-focus stage z at the smear's centre (um)."
    )
    focus_tilt_x_um_per_mm: float = Field(
        default=1.5,
        ge=-50,
        le=50,
        description="Slide tilt along x: change of best-focus z per mm of x (um/mm).",
    )
    focus_tilt_y_um_per_mm: float = Field(
        default=-0.8,
        ge=-50,
        le=50,
        description="Slide tilt along y: change of best-focus z per mm of y (um/mm).",
    )
    focus_bow_um: float = Field(
        default=3.0,
        ge=-100,
        le=100,
        description="Slide curvature: best-focus z at the smear's ends relative to a plane (um).",
    )
    defocus_blur_um_per_um: float = Field(
        default=0.3,
        gt=0,
        le=5,
        description="Blur (Gaussian sigma at the slide, um) per um of distance from best focus.",
    )
    vignetting: float = Field(
        default=0.15, ge=0, lt=1, description="Brightness lost at the field's corners (fraction)."
    )
    drift: float = Field(
        default=0.02,
        ge=0,
        lt=0.5,
        description="Slow illumination drift: amplitude as a fraction of the brightness.",
    )
    drift_period_captures: int = Field(
        default=240, ge=2, le=1_000_000, description="Period of the drift, in captures."
    )
    brightness_dn_per_ms: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description=(
            "Green level of clear glass per ms of exposure at LED 1000 and gain 1 (DN/ms, 8-bit); "
            "scales linearly with LED level, exposure and gain."
        ),
    )
    sensor_red_response: float = Field(
        default=0.62,
        gt=0.05,
        le=4,
        description="Raw red response to the LED relative to green (red gain 1/this is neutral).",
    )
    sensor_blue_response: float = Field(
        default=0.85,
        gt=0.05,
        le=4,
        description="Raw blue response to the LED relative to green (blue gain 1/this is neutral).",
    )
    read_noise_dn: float = Field(default=1.0, ge=0, le=50, description="Sensor read noise (DN).")
    electrons_per_dn: float = Field(
        default=30.0,
        gt=0,
        le=10_000,
        description="Photo-electrons per DN at gain 1 (shot noise: fewer means noisier).",
    )


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
    cell_library_pixel_size_um: float = Field(
        default=0.2,
        gt=0.02,
        le=2.0,
        description="Scale of the cell library's images (um/px); 0.2 for the PBC images as stored.",
    )
    class_mix: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_CLASS_MIX),
        description=(
            "Objects on the smear by cell-library class: white-cell classes are weights "
            "(normalised to 100 white cells); classes listed in not_white_cells are counts per "
            "100 white cells."
        ),
    )
    not_white_cells: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOT_WHITE),
        description="Library classes that are not white cells (NRBCs, platelet clumps).",
    )
    red_cell_diameter_um: float = Field(
        default=7.5, ge=4, le=12, description="Mean red-cell diameter (um)."
    )
    smear: SmearConfig = Field(default_factory=SmearConfig)
    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    controller: VirtualControllerConfig = Field(
        default_factory=VirtualControllerConfig,
        description="Motion timing of the virtual GRBL controller.",
    )
    tile_cache_mb: int = Field(
        default=160,
        ge=16,
        le=16_384,
        description="Memory for rendered slide tiles (MB); fields revisited within it render faster.",
    )

    @field_validator("class_mix")
    @classmethod
    def _mix_values(cls, mix: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in mix.items() if not v >= 0}
        if bad:
            raise ValueError(f"class_mix weights must be >= 0, got {bad}")
        if not mix:
            raise ValueError("class_mix is empty")
        return mix

    @model_validator(mode="after")
    def _some_white_cells(self) -> SimulatorConfig:
        white = {k: v for k, v in self.class_mix.items() if k not in self.not_white_cells}
        if sum(white.values()) <= 0:
            raise ValueError(
                "class_mix has no white-cell class with a weight above 0 "
                f"(not white cells: {', '.join(self.not_white_cells)})"
            )
        return self

"""Configuration of the scan: how many white cells, where, and how long it may take.

Everything an operator or a service engineer might tune for a different slide layout,
stain or optics lives here (scan area, survey grid, coverage thresholds, focus search
ranges, illumination targets); the algorithms receive these values, never constants.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from drivers.config_model import StrictModel

FocusMetricName = Literal["laplacian", "tenengrad", "brenner", "variance"]
"""Sharpness measures: see ``agent.acquisition.focus_metrics``."""


class SlidePoint(StrictModel):
    """A point on the slide (um, slide coordinates = stage position of the field centre)."""

    x_um: float = Field(description="Slide x of the point (um).")
    y_um: float = Field(description="Slide y of the point (um).")


class ScanArea(StrictModel):
    """The rectangle of the slide where the smear may lie; nothing outside it is visited."""

    x_min_um: float = Field(default=12_000.0, description="Left edge of the area (um).")
    x_max_um: float = Field(default=60_000.0, description="Right edge of the area (um).")
    y_min_um: float = Field(default=3_000.0, description="Bottom edge of the area (um).")
    y_max_um: float = Field(default=22_000.0, description="Top edge of the area (um).")

    @model_validator(mode="after")
    def _ordered(self) -> ScanArea:
        if self.x_min_um >= self.x_max_um:
            raise ValueError(f"x_min_um ({self.x_min_um}) must be below x_max_um ({self.x_max_um})")
        if self.y_min_um >= self.y_max_um:
            raise ValueError(f"y_min_um ({self.y_min_um}) must be below y_max_um ({self.y_max_um})")
        return self


class SurveyConfig(StrictModel):
    """The quick look at a sparse grid over the scan area that finds the monolayer."""

    columns: int = Field(
        default=8, ge=1, le=100, description="Survey positions along x (the smear's length)."
    )
    rows: int = Field(default=3, ge=1, le=50, description="Survey positions along y.")


class FieldClassConfig(StrictModel):
    """How a field is judged empty, monolayer or thick from its red-cell coverage."""

    cell_darkness: float = Field(
        default=0.15,
        gt=0.0,
        lt=1.0,
        description=(
            "A pixel belongs to a cell when its green level is below the background's by at "
            "least this fraction."
        ),
    )
    empty_below: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description="Coverage below which a field is empty (or too sparse to be worth reading).",
    )
    thick_above: float = Field(
        default=0.72,
        ge=0.0,
        le=1.0,
        description="Coverage above which a field is too thick (cells overlap).",
    )
    ideal_coverage: float = Field(
        default=0.52,
        ge=0.0,
        le=1.0,
        description="Coverage of the best monolayer; survey cells nearest to it are scanned first.",
    )
    max_consecutive_skips: int = Field(
        default=6,
        ge=1,
        le=1000,
        description="Skipped fields in a row after which the scan moves to the next survey cell.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> FieldClassConfig:
        if not self.empty_below < self.thick_above:
            raise ValueError(
                f"empty_below ({self.empty_below}) must be below thick_above ({self.thick_above})"
            )
        return self


class FocusConfig(StrictModel):
    """Autofocus: sharpness metric, search ranges and the focus surface."""

    metric: FocusMetricName = Field(
        default="laplacian", description="Fine sharpness metric (peaks sharply at focus)."
    )
    coarse_metric: FocusMetricName = Field(
        default="variance", description="Coarse sharpness metric (broad peak, for long sweeps)."
    )
    downsample: int = Field(
        default=2, ge=1, le=16, description="Fine metric computed on the image shrunk this much."
    )
    coarse_downsample: int = Field(
        default=8, ge=1, le=32, description="Coarse metric computed on the image shrunk this much."
    )
    start_z_um: float = Field(
        default=2_500.0, description="Centre of the first search of a sample (um, stage z)."
    )
    initial_range_um: float = Field(
        default=300.0,
        gt=0,
        le=5_000,
        description="Span of the first search of a sample, centred on start_z_um (um).",
    )
    fallback_range_um: float = Field(
        default=40.0,
        gt=0,
        le=1_000,
        description="Span of a full search when a field's local check fails, centred on the prediction (um).",
    )
    max_tilt_um_per_mm: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description=(
            "Steepest change of focus across the slide to expect (um per mm); sizes the "
            "search for a field far from any focused one."
        ),
    )
    texture_range_um: float = Field(
        default=15.0,
        ge=0,
        le=1_000,
        description=(
            "Defocus within which cells still show texture (um): a field predicted at least "
            "this well that shows none is empty and is not searched."
        ),
    )
    coarse_step_um: float = Field(
        default=8.0, gt=0, le=200, description="Step of the coarse sweep (um)."
    )
    fine_step_um: float = Field(
        default=1.0, gt=0, le=50, description="Step of the fine sweep (um)."
    )
    fine_points: int = Field(
        default=7, ge=3, le=41, description="Images in the fine sweep around the coarse peak."
    )
    check_step_um: float = Field(
        default=1.0,
        gt=0,
        le=50,
        description="Spacing of the local check's images around the predicted focus (um).",
    )
    max_walk_steps: int = Field(
        default=2,
        ge=0,
        le=20,
        description="Extra images taken to follow a peak past the edge of the local check.",
    )
    accept_tolerance_um: float = Field(
        default=0.25,
        ge=0,
        le=10,
        description=(
            "An image already taken this close to the fitted focus is kept; farther, "
            "one more image is taken at the focus (um)."
        ),
    )
    z_step_um: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description=(
            "Smallest z step the stage carries out; focus positions are rounded to it so "
            "every image's z is the one really reached (um)."
        ),
    )
    backlash_um: float = Field(
        default=10.0,
        ge=0,
        le=500,
        description="Every focus position is approached from below, from this far under it (um).",
    )
    min_contrast: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Relative intensity spread below which a field has no texture to focus on.",
    )
    min_peak_ratio: float = Field(
        default=1.5,
        ge=1,
        le=1000,
        description="A full search fails unless its best score is this many times its worst.",
    )
    min_local_ratio: float = Field(
        default=1.03,
        ge=1,
        le=100,
        description="A local check fails unless its peak score beats its neighbours' mean by this ratio.",
    )
    min_relative_score: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "A local check fails when its peak score is below this fraction of the median "
            "score of the fields focused so far."
        ),
    )
    max_images_per_field: int = Field(
        default=80, ge=3, le=1_000, description="Most images one field's focusing may take."
    )
    quadratic_min_points: int = Field(
        default=8,
        ge=6,
        le=1_000,
        description="Focused fields needed before the focus surface is a quadratic (a plane before).",
    )
    surface_outlier_um: float = Field(
        default=4.0,
        gt=0,
        le=1_000,
        description="Focus points this far from the fitted surface are left out of the fit (um).",
    )
    local_radius_um: float = Field(
        default=1_500.0,
        ge=0,
        le=100_000,
        description=(
            "Residuals of focused fields within this distance correct the surface's "
            "prediction; 0 uses the fitted surface alone (um)."
        ),
    )


class IlluminationConfig(StrictModel):
    """Exposure and white balance, calibrated on clear background at the start of a sample."""

    target_background: float = Field(
        default=0.80,
        gt=0.05,
        lt=1.0,
        description="Wanted green level of the empty background, as a fraction of full scale.",
    )
    tolerance: float = Field(
        default=0.03,
        gt=0,
        le=0.5,
        description="Calibration stops when the background is this close to the target (fraction of full scale).",
    )
    initial_exposure_us: int = Field(
        default=4_000,
        ge=10,
        le=1_000_000,
        description="Exposure before calibration (camera.exposure_us wins when set) (us).",
    )
    max_exposure_us: int = Field(
        default=200_000,
        ge=10,
        le=1_000_000,
        description="Longest exposure calibration may pick (us).",
    )
    max_iterations: int = Field(
        default=8, ge=1, le=50, description="Most exposure adjustments before calibration fails."
    )
    white_balance: bool = Field(
        default=True, description="Set the red and blue gains so the background is neutral grey."
    )
    min_background_fraction: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="Part of a field that must be background for it to calibrate on.",
    )
    position: SlidePoint | None = Field(
        default=None,
        description=(
            "A known clear (cell-free) place to calibrate on; empty to use the brightest "
            "surveyed field."
        ),
    )


class AcquisitionConfig(StrictModel):
    """How a sample is scanned."""

    target_wbc: int = Field(
        default=200, ge=100, le=500, description="White cells to count before the scan stops."
    )
    time_budget_s: float = Field(
        default=270.0, gt=0, le=3600, description="Longest time a sample's scan may take (s)."
    )
    field_overlap: float = Field(
        default=0.05, ge=0.0, le=0.5, description="Fraction of a field shared with its neighbour."
    )
    led_pwm: int = Field(
        default=700, ge=0, le=1000, description="LED brightness as GRBL spindle value S (0-1000)."
    )
    max_fields: int = Field(
        default=600,
        ge=1,
        le=100_000,
        description="Most fields captured for one sample after the survey (scanned or skipped).",
    )
    queue_size: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Captured fields that may wait for analysis while the next is captured.",
    )
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Longest wait for the next field before the scan is declared stuck (s).",
    )
    scan_area: ScanArea = Field(default_factory=ScanArea)
    survey: SurveyConfig = Field(default_factory=SurveyConfig)
    field_classes: FieldClassConfig = Field(default_factory=FieldClassConfig)
    focus: FocusConfig = Field(default_factory=FocusConfig)
    illumination: IlluminationConfig = Field(default_factory=IlluminationConfig)

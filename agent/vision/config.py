"""Configuration of the on-device models."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from drivers.config_model import StrictModel


class VisionConfig(StrictModel):
    """Which models analyse the fields and how."""

    models_dir: Path | None = Field(
        default=None,
        description="Directory holding the ONNX models and their cards; empty for those shipped.",
    )
    threads: int = Field(
        default=0, ge=0, le=64, description="onnxruntime intra-op threads; 0 uses every core."
    )

"""Model cards: the machine-readable sidecar of every shipped model, and its checks.

The agent refuses a model whose file does not hash to the sha256 on its card: a
model that was swapped, truncated or retrained without its card updated would make
every result's provenance a lie.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ModelLoadError

CARD_SUFFIX = ".card.json"


class InputSpec(BaseModel):
    """How to turn an image into the model's input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int | str] = Field(description="NCHW; a string marks a dynamic dimension.")
    color: Literal["RGB", "BGR"]
    pixel_size_um: float = Field(gt=0, description="Scale the model expects (um/px).")
    normalization: dict[str, Any] = Field(
        description="Pre-processing applied before the network, e.g. stain normalisation and mean/std."
    )


class ModelCard(BaseModel):
    """What a model is, how it was made and how well it does. Extra keys are allowed for metrics."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    version: str
    task: Literal["classification", "detection"]
    file: str = Field(description="ONNX file name, relative to the card's directory.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: list[str]
    input: InputSpec
    opset: int
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_models_dir() -> Path:
    """The directory of the models installed with the package."""
    return Path(str(resources.files("models")))


def load_card(card_path: Path) -> ModelCard:
    """Read and validate a model card, without touching the model file."""
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(f"{card_path}: model card not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{card_path}: cannot read model card: {e}") from e
    try:
        return ModelCard.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelLoadError(f"{card_path}: invalid model card: {where}: {first['msg']}") from e


def verified_model_path(card_path: Path, card: ModelCard) -> Path:
    """The model file named by ``card``, after checking it exists and matches its sha256."""
    model_path = card_path.parent / card.file
    if not model_path.is_file():
        raise ModelLoadError(f"{model_path}: model file named by {card_path.name} not found")
    actual = file_sha256(model_path)
    if actual != card.sha256:
        raise ModelLoadError(
            f"{model_path}: sha256 {actual} does not match its model card ({card.sha256}); "
            "refusing to load a model that is not the one described"
        )
    return model_path


def fp32_twin_path(models_dir: Path, card: ModelCard) -> Path | None:
    """The card's FP32 twin (``fp32_file``), sha256-checked; None when it is absent.

    Training writes the twin next to the INT8 model so that evaluations can compare the
    two. It is neither committed nor installed (the analyzer runs INT8 only), so a fresh
    clone has none and comparisons skip it; a twin that is there but differs from the
    card is refused like any other model.
    """
    extra = card.model_extra or {}
    name = extra.get("fp32_file")
    if not isinstance(name, str) or not name:
        return None
    path = models_dir / name
    if not path.is_file():
        return None
    if file_sha256(path) != extra.get("fp32_sha256"):
        raise ModelLoadError(f"{path}: sha256 does not match the card's fp32_sha256")
    return path

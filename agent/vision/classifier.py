"""White-cell classification of cell crops with the shipped INT8 model.

Everything the network needs done to an image (scale, crop, stain normalisation,
mean/std) is read from the model card, so a retrained model with a different input
recipe ships as files, not as code. Probabilities are temperature-calibrated on the
validation split; below the card's ``unidentified`` threshold a cell is reported as
``unidentified``, as commercial analyzers do, instead of being forced into a class.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.errors import InputError, ModelLoadError
from agent.vision.model_card import ModelCard, shipped_models_dir
from agent.vision.preprocess import (
    TTA_METHODS,
    InputTransform,
    cells_in_field,
    centred_cell,
    check_image,
    dihedral_views,
    mean_over_views,
)
from agent.vision.runtime import LoadedModel, load_model
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

MODEL_NAME = "classifier"
UNIDENTIFIED = "unidentified"
BATCH = 32
"""Crops per onnxruntime call: bounds memory on the board, amortises call overhead."""


@dataclass(frozen=True)
class CellCall:
    """The classifier's answer for one cell."""

    label: str
    """``top_label``, or ``"unidentified"`` when ``confidence`` is below the card's threshold."""
    top_label: str
    confidence: float
    """Calibrated probability of ``top_label``."""
    probabilities: dict[str, float]


def softmax(logits: npt.NDArray[np.float32], temperature: float) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


class CellClassifier:
    """Names the white cell at the centre of each crop."""

    def __init__(self, model: LoadedModel) -> None:
        card = model.card
        if card.task != "classification":
            raise ModelLoadError(f"{model.path}: card task is {card.task}, not classification")
        try:
            self._transform = InputTransform.from_card(card.input)
        except ValueError as e:
            raise ModelLoadError(f"{model.path}: card input section is unusable: {e}") from e
        self._model = model
        self.card: ModelCard = card
        self.labels: tuple[str, ...] = tuple(card.labels)
        self._input_name = model.session.get_inputs()[0].name
        self.temperature = self._card_temperature(card)
        self.tta = self._card_tta(card)
        self.threshold = float(card.thresholds.get(UNIDENTIFIED, 0.0))
        outputs = model.session.get_outputs()[0].shape
        if len(outputs) != 2 or (isinstance(outputs[1], int) and outputs[1] != len(self.labels)):
            raise ModelLoadError(
                f"{model.path}: model output {outputs} does not match {len(self.labels)} labels"
            )

    @staticmethod
    def _card_temperature(card: ModelCard) -> float:
        extra = card.model_extra or {}
        calibration = extra.get("calibration", {})
        value = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else 1.0
        try:
            temperature = float(value)
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"card calibration.temperature {value!r} is not a number") from e
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ModelLoadError(f"card calibration.temperature {temperature} must be positive")
        return temperature

    @staticmethod
    def _card_tta(card: ModelCard) -> str:
        """Test-time augmentation named by the card's ``inference.tta`` (default none)."""
        extra = card.model_extra or {}
        inference = extra.get("inference", {})
        tta = inference.get("tta", "none") if isinstance(inference, dict) else "none"
        if tta not in TTA_METHODS:
            raise ModelLoadError(
                f"card inference.tta {tta!r} is not one of {', '.join(TTA_METHODS)}"
            )
        return str(tta)

    @classmethod
    def load(cls, models_dir: Path | None = None, threads: int = 0) -> CellClassifier:
        """The classifier of ``models_dir`` (None: the shipped one), sha256-verified."""
        directory = models_dir if models_dir is not None else shipped_models_dir()
        return cls(load_model(directory, MODEL_NAME, threads))

    @property
    def crop_px(self) -> int:
        return self._transform.crop_px

    @property
    def pixel_size_um(self) -> float:
        """The scale crops are brought to before the network (um/px)."""
        return self._transform.pixel_size_um

    def classify(self, images: Sequence[BgrImage], pixel_size_um: float = 0.2) -> list[CellCall]:
        """Classify images each centred on one cell, any size, at ``pixel_size_um``."""
        crops = [
            centred_cell(image, pixel_size_um, self.pixel_size_um, self.crop_px) for image in images
        ]
        return self.classify_crops(crops)

    def classify_at(
        self,
        field: BgrImage,
        centres: Sequence[tuple[float, float]],
        pixel_size_um: float,
    ) -> list[CellCall]:
        """Classify the cells at pixel ``centres`` (x, y) of a field; edges are padded."""
        if not centres:
            return []
        crops = cells_in_field(field, centres, pixel_size_um, self.pixel_size_um, self.crop_px)
        return self.classify_crops(crops)

    def classify_crops(self, crops: Sequence[BgrImage]) -> list[CellCall]:
        """Classify BGR crops already at the reference scale and ``crop_px`` square."""
        calls: list[CellCall] = []
        for start in range(0, len(crops), BATCH):
            batch = [check_image(c) for c in crops[start : start + BATCH]]
            for c in batch:
                if c.shape[:2] != (self.crop_px, self.crop_px):
                    raise InputError(
                        f"crop of {c.shape[1]}x{c.shape[0]} px, expected {self.crop_px} square"
                    )
            logits = self.logits(batch)
            calls.extend(self._call(row) for row in softmax(logits, self.temperature))
        return calls

    def logits(self, crops: Sequence[BgrImage]) -> npt.NDArray[np.float32]:
        """Network output for reference-scale BGR crops (uncalibrated).

        With the card's ``inference.tta`` = ``dihedral8`` the logits are the mean over
        the 8 rotations/flips of each crop, all run in one batch.
        """
        x = self._transform.bgr_input(crops)
        if self.tta == "dihedral8":
            x = dihedral_views(x)
        out = self._model.session.run(None, {self._input_name: x})[0]
        result: npt.NDArray[np.float32] = np.asarray(out, dtype=np.float32)
        if self.tta == "dihedral8":
            result = mean_over_views(result, 8)
        return result

    def _call(self, probs: npt.NDArray[np.float64]) -> CellCall:
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        top_label = self.labels[top]
        label = top_label if confidence >= self.threshold else UNIDENTIFIED
        return CellCall(
            label=label,
            top_label=top_label,
            confidence=confidence,
            probabilities={name: float(p) for name, p in zip(self.labels, probs, strict=True)},
        )

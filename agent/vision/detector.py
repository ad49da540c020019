"""The white-cell detector: finds every nucleated cell in a whole field.

A small fully-convolutional network (CenterNet-style) runs on the field resampled to
the model's own, coarser scale (the card's ``input.pixel_size_um``, 0.4 um/px), so a
2028x1520 camera field costs a 1014x760 inference. It predicts a centre heatmap and,
at each heatmap cell, the sub-cell offset of the centre and the log box size. Peaks of
the heatmap above the card's score threshold become boxes, mapped back to the input
image's pixels and clipped to it (cells cut by the image border are reported with the
visible part of their box; the pipeline decides what to do with them).

Only numpy, OpenCV and onnxruntime are used here: this runs on the analyzer board.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.errors import InputError, ModelLoadError
from agent.vision.boxes import nms
from agent.vision.model_card import ModelCard, shipped_models_dir
from agent.vision.runtime import load_model
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

MODEL_NAME = "detector"
"""File stem of the shipped detector: ``detector.card.json`` names ``detector.int8.onnx``."""

MAX_FIELD_PIXELS = 64_000_000
"""Refuse images beyond this (a 8000x8000 field); a camera field is about 3 megapixels."""


@dataclass(frozen=True)
class Detection:
    """One detected cell."""

    bbox: tuple[float, float, float, float]
    """x0, y0, x1, y1 in the input image's pixels (continuous coordinates, clipped to it)."""
    score: float
    """Heatmap peak probability, 0..1."""


@dataclass(frozen=True)
class DecodingSpec:
    """How to read the network's outputs; stored in the card under ``decoding``."""

    stride: int
    pad_multiple: int
    heatmap_output: str
    regression_output: str

    @classmethod
    def from_card(cls, card: ModelCard) -> DecodingSpec:
        raw = (card.model_extra or {}).get("decoding")
        if not isinstance(raw, dict):
            raise ModelLoadError(f"detector card {card.name}: missing 'decoding' section")
        try:
            return cls(
                stride=int(raw["stride"]),
                pad_multiple=int(raw["pad_multiple"]),
                heatmap_output=str(raw["heatmap_output"]),
                regression_output=str(raw["regression_output"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"detector card {card.name}: bad 'decoding' section: {e}") from e


def _channel_vector(
    normalization: dict[str, Any], key: str, default: float
) -> npt.NDArray[np.float32]:
    value = normalization.get(key, [default] * 3)
    array = np.asarray(value, dtype=np.float32).reshape(-1)
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ModelLoadError(f"detector card: normalization.{key} must be 3 finite numbers")
    return array


class CellDetector:
    """Finds nucleated cells (white cells and nucleated red cells) in whole fields."""

    card: ModelCard

    def __init__(self, card: ModelCard, session: ort.InferenceSession) -> None:
        if card.task != "detection":
            raise ModelLoadError(f"model {card.name} is a {card.task} model, not a detector")
        self.card = card
        self._session = session
        self._decoding = DecodingSpec.from_card(card)
        norm = card.input.normalization
        self._scale = float(norm.get("scale", 1.0 / 255.0))
        self._mean = _channel_vector(norm, "mean", 0.0)
        self._std = _channel_vector(norm, "std", 1.0)
        if np.any(self._std <= 0):
            raise ModelLoadError("detector card: normalization.std must be positive")
        self._rgb = card.input.color == "RGB"
        self._score_threshold = float(card.thresholds.get("score", 0.5))
        self._nms_iou = float(card.thresholds.get("nms_iou", 0.3))
        self._max_detections = int(card.thresholds.get("max_detections", 500))
        self._input_name = card.input.name
        outputs = {o.name for o in session.get_outputs()}
        wanted = {self._decoding.heatmap_output, self._decoding.regression_output}
        if not wanted <= outputs or self._input_name not in {i.name for i in session.get_inputs()}:
            raise ModelLoadError(
                f"detector {card.name}: the ONNX graph's inputs/outputs do not match its card"
            )

    @classmethod
    def load(cls, models_dir: Path | None = None, threads: int = 0) -> CellDetector:
        """Load the detector from ``models_dir`` (default: the shipped models), hash-verified."""
        loaded = load_model(models_dir or shipped_models_dir(), MODEL_NAME, threads)
        return cls(loaded.card, loaded.session)

    @property
    def model_pixel_size_um(self) -> float:
        return float(self.card.input.pixel_size_um)

    def detect(self, image: BgrImage, pixel_size_um: float = 0.2) -> list[Detection]:
        """Every nucleated cell in ``image`` (BGR, ``pixel_size_um`` micrometres per pixel)."""
        height, width = _check_image(image)
        if not (math.isfinite(pixel_size_um) and 0.01 <= pixel_size_um <= 10.0):
            raise InputError(f"pixel size {pixel_size_um} um/px is outside 0.01..10")
        tensor, scale_x, scale_y = self.preprocess(image, pixel_size_um)
        heatmap, regression = self._session.run(
            [self._decoding.heatmap_output, self._decoding.regression_output],
            {self._input_name: tensor},
        )
        valid_w = max(1, round(width * scale_x))
        valid_h = max(1, round(height * scale_y))
        return self._decode(
            np.asarray(heatmap)[0, 0],
            np.asarray(regression)[0],
            (valid_w, valid_h),
            (scale_x, scale_y),
            (width, height),
        )

    def preprocess(
        self, image: BgrImage, pixel_size_um: float
    ) -> tuple[npt.NDArray[np.float32], float, float]:
        """The network input for ``image``, and the x and y scale from image to model pixels.

        Resampled to the model's scale, normalised, zero-padded at right and bottom to the
        network's stride multiple. Public so that INT8 calibration and benchmarks feed the
        network exactly what ``detect`` feeds it.
        """
        height, width = image.shape[:2]
        factor = pixel_size_um / self.model_pixel_size_um
        new_w = max(1, round(width * factor))
        new_h = max(1, round(height * factor))
        if (new_w, new_h) != (width, height):
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        else:
            resized = image
        if self._rgb:
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        multiple = self._decoding.pad_multiple
        pad_h = -(-new_h // multiple) * multiple
        pad_w = -(-new_w // multiple) * multiple
        tensor = np.zeros((1, 3, pad_h, pad_w), dtype=np.float32)
        normalised = (resized.astype(np.float32) * self._scale - self._mean) / self._std
        tensor[0, :, :new_h, :new_w] = normalised.transpose(2, 0, 1)
        return tensor, new_w / width, new_h / height

    def _decode(
        self,
        heatmap: npt.NDArray[np.float32],
        regression: npt.NDArray[np.float32],
        valid: tuple[int, int],
        scale: tuple[float, float],
        size: tuple[int, int],
    ) -> list[Detection]:
        stride = self._decoding.stride
        logit_threshold = math.log(self._score_threshold / (1.0 - self._score_threshold))
        peaks = cv2.dilate(heatmap, np.ones((3, 3), np.uint8))
        cells_w = -(-valid[0] // stride)
        cells_h = -(-valid[1] // stride)
        is_peak = (heatmap >= peaks) & (heatmap > logit_threshold)
        is_peak[cells_h:, :] = False
        is_peak[:, cells_w:] = False
        ys, xs = np.nonzero(is_peak)
        if len(xs) == 0:
            return []
        logits = heatmap[ys, xs].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        reg = regression[:, ys, xs].astype(np.float64)
        cx = (xs + reg[0]) * stride
        cy = (ys + reg[1]) * stride
        half_w = np.exp(np.clip(reg[2], -4.0, 8.0)) / 2
        half_h = np.exp(np.clip(reg[3], -4.0, 8.0)) / 2
        scale_x, scale_y = scale
        width, height = size
        boxes = np.stack(
            [
                np.clip((cx - half_w) / scale_x, 0, width),
                np.clip((cy - half_h) / scale_y, 0, height),
                np.clip((cx + half_w) / scale_x, 0, width),
                np.clip((cy + half_h) / scale_y, 0, height),
            ],
            axis=1,
        )
        usable = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        boxes, scores = boxes[usable], scores[usable]
        keep = nms(boxes, scores, self._nms_iou)[: self._max_detections]
        return [
            Detection(bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(s))
            for b, s in zip(boxes[keep], scores[keep], strict=True)
        ]


def _check_image(image: object) -> tuple[int, int]:
    """Height and width of a usable BGR image, or an ``InputError`` saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"expected an H x W x 3 uint8 BGR image, got shape {image.shape} {image.dtype}"
        )
    height, width = int(image.shape[0]), int(image.shape[1])
    if height < 8 or width < 8:
        raise InputError(f"image of {width}x{height} px is too small to hold a cell")
    if height * width > MAX_FIELD_PIXELS:
        raise InputError(f"image of {width}x{height} px is larger than a field can be")
    return height, width

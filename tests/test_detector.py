"""The shipped white-cell detector on real fields: it loads verified, finds the cells, maps boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import InputError, ModelLoadError
from agent.vision.boxes import iou_matrix, match_detections
from agent.vision.detector import MODEL_NAME, CellDetector, Detection
from agent.vision.model_card import file_sha256, load_card, shipped_models_dir

FIXTURES = Path(__file__).parent / "fixtures" / "detector"
FIELDS = json.loads((FIXTURES / "fields.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def detector() -> CellDetector:
    return CellDetector.load(threads=1)


def _boxes(found: list[Detection]) -> np.ndarray:
    return np.asarray([d.bbox for d in found], dtype=np.float64).reshape(-1, 4)


def _field(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, white-cell boxes, platelet boxes and don't-care boxes of a fixture field."""
    image = cv2.imread(str(FIXTURES / name), cv2.IMREAD_COLOR)
    assert image is not None
    meta = FIELDS[name]

    def boxes(key: str) -> np.ndarray:
        return np.asarray(meta.get(key, []), dtype=np.float64).reshape(-1, 4)

    return image, boxes("white_cells"), boxes("platelets"), boxes("dont_care")


def test_shipped_detector_matches_its_card(detector: CellDetector) -> None:
    models = shipped_models_dir()
    card = load_card(models / f"{MODEL_NAME}.card.json")
    assert card.task == "detection"
    assert card.file == "detector.int8.onnx"
    assert file_sha256(models / card.file) == card.sha256
    assert detector.card == card
    assert 0 < card.thresholds["score"] < 1
    for key in ("bccd_val_int8", "bccd_val_fp32", "latency_per_field_ms"):
        assert key in card.metrics


def test_a_tampered_model_is_refused(tmp_path: Path) -> None:
    models = shipped_models_dir()
    shutil.copy(models / f"{MODEL_NAME}.card.json", tmp_path)
    data = bytearray((models / "detector.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "detector.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        CellDetector.load(tmp_path)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_finds_every_white_cell_and_no_platelet(detector: CellDetector, name: str) -> None:
    image, truth, platelets, dont_care = _field(name)
    found = detector.detect(image, FIELDS[name]["pixel_size_um"])
    boxes = _boxes(found)
    scores = np.asarray([d.score for d in found])
    result = match_detections(boxes, scores, truth, 0.5, dont_care)
    assert result.false_negatives == 0, f"missed {truth[list(result.missed)]}; found {boxes}"
    assert result.false_positives == 0, f"spurious {boxes[list(result.spurious)]}"
    if len(platelets) and len(boxes):
        assert iou_matrix(boxes, platelets).max() < 0.1


def test_boxes_are_in_the_input_images_pixels(detector: CellDetector) -> None:
    """The same field at twice the resolution (0.1 um/px) gives boxes twice as large."""
    image, truth, _, _ = _field("bccd_00070.png")
    big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    at_ref = _boxes(detector.detect(image, 0.2))
    at_big = _boxes(detector.detect(big, 0.1))
    assert len(at_big) == len(truth)
    result = match_detections(at_big, np.ones(len(at_big)), truth * 2, 0.5)
    assert result.false_negatives == 0 and result.false_positives == 0
    assert iou_matrix(at_big / 2, at_ref).max(axis=1).min() > 0.8


def test_a_cell_cut_by_the_border_is_found(detector: CellDetector) -> None:
    image, truth, _, _ = _field("bccd_00110.png")
    x0, _, x1, _ = truth[0]
    cut_at = int((x0 + x1) / 2)  # the image now starts in the middle of the cell
    part = np.ascontiguousarray(image[:, cut_at:])
    visible = truth[0] - [cut_at, 0, cut_at, 0]
    visible[0] = 0
    boxes = _boxes(detector.detect(part, 0.2))
    assert len(boxes), "the half cell at the left edge was not found"
    assert iou_matrix(boxes, visible[None]).max() >= 0.5
    assert boxes[:, 0].min() == 0.0


def test_a_blank_field_has_no_cells(detector: CellDetector) -> None:
    blank = np.full((760, 1014, 3), (215, 212, 222), np.uint8)
    assert detector.detect(blank, 0.2) == []


@pytest.mark.parametrize(
    ("image", "pixel_size", "message"),
    [
        (np.zeros((100, 100), np.uint8), 0.2, "H x W x 3"),
        (np.zeros((100, 100, 3), np.float32), 0.2, "uint8"),
        (np.zeros((4, 100, 3), np.uint8), 0.2, "too small"),
        (np.zeros((100, 100, 3), np.uint8), 0.0, "pixel size"),
        (np.zeros((100, 100, 3), np.uint8), float("nan"), "pixel size"),
    ],
)
def test_unusable_input_is_refused_clearly(
    detector: CellDetector, image: np.ndarray, pixel_size: float, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        detector.detect(image, pixel_size)

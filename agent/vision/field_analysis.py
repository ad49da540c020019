"""Everything the vision stage says about one field: where each cell is and what it is.

The daemon calls ``FieldAnalyzer.analyze`` on every captured field; ``algocyte-agent
analyze`` calls it on image files. The detector finds the nucleated cells, the
classifier names each one from a crop centred on its box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from agent.vision.classifier import CellCall, CellClassifier
from agent.vision.detector import CellDetector
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

BORDER_MARGIN_PX = 1.0
"""A box within this many pixels of the image edge belongs to a cell the edge cuts."""


@dataclass(frozen=True)
class CellFinding:
    """One cell of a field."""

    bbox: tuple[float, float, float, float]
    """x0, y0, x1, y1 in the field image's pixels (the visible part, for cut cells)."""
    detection_score: float
    call: CellCall
    cut_by_border: bool
    """The image edge cuts the cell: its box and its crop show only part of it."""

    @property
    def label(self) -> str:
        return self.call.label

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


class FieldAnalyzer:
    """Detector plus classifier, loaded once and used for every field."""

    def __init__(self, detector: CellDetector, classifier: CellClassifier) -> None:
        self.detector = detector
        self.classifier = classifier

    @classmethod
    def load(cls, models_dir: Path | None = None, threads: int = 0) -> FieldAnalyzer:
        """Both shipped (or ``models_dir``) models, each verified against its card."""
        return cls(CellDetector.load(models_dir, threads), CellClassifier.load(models_dir, threads))

    def analyze(self, image: BgrImage, pixel_size_um: float) -> list[CellFinding]:
        """Every cell of ``image`` (BGR, ``pixel_size_um`` um per pixel), in detection order."""
        detections = self.detector.detect(image, pixel_size_um)
        if not detections:
            return []
        height, width = image.shape[:2]
        centres = [
            ((d.bbox[0] + d.bbox[2]) / 2.0, (d.bbox[1] + d.bbox[3]) / 2.0) for d in detections
        ]
        calls = self.classifier.classify_at(image, centres, pixel_size_um)
        findings = []
        for d, call in zip(detections, calls, strict=True):
            x0, y0, x1, y1 = d.bbox
            cut = (
                x0 <= BORDER_MARGIN_PX
                or y0 <= BORDER_MARGIN_PX
                or x1 >= width - BORDER_MARGIN_PX
                or y1 >= height - BORDER_MARGIN_PX
            )
            findings.append(
                CellFinding(bbox=d.bbox, detection_score=d.score, call=call, cut_by_border=cut)
            )
        _log.debug("field %dx%d: %d cells", width, height, len(findings))
        return findings

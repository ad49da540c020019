"""FieldAnalyzer, as the daemon calls it on every field: detector boxes plus classifier calls."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.vision.field_analysis import FieldAnalyzer

FIXTURES = Path(__file__).parent / "fixtures" / "detector"
FIELDS = json.loads((FIXTURES / "fields.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def analyzer() -> FieldAnalyzer:
    return FieldAnalyzer.load(threads=1)


def test_every_detected_cell_is_classified(analyzer: FieldAnalyzer) -> None:
    image = cv2.imread(str(FIXTURES / "bccd_00070.png"))
    findings = analyzer.analyze(image, 0.2)
    detections = analyzer.detector.detect(image, 0.2)
    assert [f.bbox for f in findings] == [d.bbox for d in detections]
    assert len(findings) == len(FIELDS["bccd_00070.png"]["white_cells"])
    labels = set(analyzer.classifier.card.labels)
    for f in findings:
        assert f.call.top_label in labels
        assert 0.0 <= f.call.confidence <= 1.0
        assert not f.cut_by_border


def test_a_cell_on_the_edge_is_flagged(analyzer: FieldAnalyzer) -> None:
    image = cv2.imread(str(FIXTURES / "bccd_00110.png"))
    x0, _, x1, _ = FIELDS["bccd_00110.png"]["white_cells"][0]
    part = image[:, int((x0 + x1) / 2) :].copy()
    findings = analyzer.analyze(part, 0.2)
    assert any(f.cut_by_border and f.bbox[0] == 0.0 for f in findings)


def test_an_empty_field_gives_no_findings(analyzer: FieldAnalyzer) -> None:
    blank = np.full((200, 300, 3), 215, np.uint8)
    assert analyzer.analyze(blank, 0.2) == []

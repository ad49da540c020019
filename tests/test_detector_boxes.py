"""Box overlap, duplicate suppression and ground-truth matching (what every metric rests on)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.vision.boxes import iou_matrix, match_detections, nms


def test_iou_of_known_boxes() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 50 / 150, 0.0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]])
    keep = nms(boxes, np.array([0.6, 0.9, 0.5]), iou_threshold=0.3)
    assert keep == [1, 2]


def test_matching_counts_each_truth_once() -> None:
    truth = np.array([[0, 0, 10, 10], [50, 50, 60, 60]])
    dets = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [100, 100, 110, 110]])
    m = match_detections(dets, np.array([0.9, 0.8, 0.7]), truth, 0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 2, 1)
    assert m.missed == (1,)
    assert set(m.spurious) == {1, 2}


def test_detections_on_dont_care_regions_are_not_false_positives() -> None:
    truth = np.array([[0, 0, 10, 10]])
    ignore = np.array([[90, 90, 120, 120]])
    dets = np.array([[0, 0, 10, 10], [95, 95, 110, 110]])
    m = match_detections(dets, np.array([0.9, 0.8]), truth, 0.5, ignore)
    assert (m.true_positives, m.false_positives, m.ignored) == (1, 0, 1)

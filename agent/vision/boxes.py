"""Axis-aligned boxes: overlap, suppression of duplicates, and matching to a ground truth.

Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (pixel ``i`` spans
``[i, i + 1)``), as float arrays of shape (N, 4). Shared by the detector runtime, the
training and benchmark scripts and the tests so that every number is computed one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def as_boxes(boxes: object) -> FloatArray:
    """``boxes`` as an (N, 4) float64 array (an empty input gives shape (0, 4))."""
    array = np.asarray(boxes, dtype=np.float64)
    return array.reshape(-1, 4)


def box_area(boxes: FloatArray) -> FloatArray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Intersection over union of every box of ``a`` with every box of ``b``: shape (len(a), len(b))."""
    a = as_boxes(a)
    b = as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: FloatArray, scores: npt.NDArray[np.floating], iou_threshold: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    boxes = as_boxes(boxes)
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))
    if not order:
        return []
    overlaps = iou_matrix(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= overlaps[i] > iou_threshold
    return keep


def centres_inside(points: FloatArray, boxes: FloatArray) -> npt.NDArray[np.bool_]:
    """For each (x, y) point, whether it lies inside any of ``boxes``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    boxes = as_boxes(boxes)
    if len(points) == 0 or len(boxes) == 0:
        return np.zeros(len(points), dtype=bool)
    inside = (
        (points[:, None, 0] >= boxes[None, :, 0])
        & (points[:, None, 0] <= boxes[None, :, 2])
        & (points[:, None, 1] >= boxes[None, :, 1])
        & (points[:, None, 1] <= boxes[None, :, 3])
    )
    return np.asarray(inside.any(axis=1))


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching one image's detections to its ground truth."""

    true_positives: int
    false_positives: int
    false_negatives: int
    ignored: int
    """Unmatched detections that fall on a don't-care region (neither right nor wrong)."""
    missed: tuple[int, ...]
    """Indices of the ground-truth boxes that no detection matched."""
    spurious: tuple[int, ...]
    """Indices of the detections counted as false positives."""


def match_detections(
    detections: FloatArray,
    scores: npt.NDArray[np.floating],
    truth: FloatArray,
    iou_threshold: float = 0.5,
    ignore: FloatArray | None = None,
) -> MatchResult:
    """Greedy one-to-one matching, best score first, at ``iou_threshold``.

    A detection left unmatched is not counted against the model when its centre lies
    in an ``ignore`` region (a cell the annotators left out or cut to a sliver by the
    image border) or when it overlaps one at IoU >= 0.3.
    """
    detections = as_boxes(detections)
    truth = as_boxes(truth)
    ignore_boxes = as_boxes(ignore if ignore is not None else np.zeros((0, 4)))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    overlaps = iou_matrix(detections, truth)
    taken = np.zeros(len(truth), dtype=bool)
    unmatched: list[int] = []
    tp = 0
    for i in order:
        if len(truth):
            candidates = np.where(taken, -1.0, overlaps[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= iou_threshold:
                taken[j] = True
                tp += 1
                continue
        unmatched.append(int(i))
    spurious: list[int] = []
    ignored = 0
    if unmatched:
        rest = detections[unmatched]
        centres = np.stack([(rest[:, 0] + rest[:, 2]) / 2, (rest[:, 1] + rest[:, 3]) / 2], axis=1)
        on_ignore = centres_inside(centres, ignore_boxes)
        if len(ignore_boxes):
            on_ignore |= iou_matrix(rest, ignore_boxes).max(axis=1) >= 0.3
        for k, i in enumerate(unmatched):
            if on_ignore[k]:
                ignored += 1
            else:
                spurious.append(i)
    missed = tuple(int(j) for j in np.flatnonzero(~taken))
    return MatchResult(
        true_positives=tp,
        false_positives=len(spurious),
        false_negatives=len(missed),
        ignored=ignored,
        missed=missed,
        spurious=tuple(spurious),
    )

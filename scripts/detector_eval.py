"""Recall and precision of a detector on labelled fields, the one way every script counts them.

Ground truth is the fields' nucleated-cell boxes; a detection matches one at IoU >= 0.5
(one-to-one, best score first); detections on don't-care regions are neither right nor
wrong (see ``agent.vision.boxes.match_detections``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from detector_data import LabelledField

from agent.vision.boxes import match_detections
from agent.vision.detector import CellDetector
from agent.vision.model_card import fp32_twin_path
from agent.vision.runtime import session_options

_log = logging.getLogger(__name__)


@dataclass
class DetectionCounts:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    ignored: int = 0
    fields: int = 0
    errors: list[str] = field(default_factory=list)
    per_class: dict[str, list[int]] = field(default_factory=dict)
    """Class -> [found, missed], for fields whose boxes have classes."""

    @property
    def recall(self) -> float:
        found = self.true_positives + self.false_negatives
        return self.true_positives / found if found else float("nan")

    @property
    def precision(self) -> float:
        said = self.true_positives + self.false_positives
        return self.true_positives / said if said else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "recall": round(self.recall, 4),
            "precision": round(self.precision, 4),
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "ignored_detections": self.ignored,
            "fields": self.fields,
            **(
                {
                    "recall_by_class": {
                        k: f"{v[0]}/{v[0] + v[1]}" for k, v in sorted(self.per_class.items())
                    }
                }
                if self.per_class
                else {}
            ),
        }


@dataclass
class FieldDetections:
    field: LabelledField
    boxes: np.ndarray
    scores: np.ndarray
    seconds: float


def run_detector(detector: CellDetector, fields: Sequence[LabelledField]) -> list[FieldDetections]:
    out = []
    for lf in fields:
        start = time.perf_counter()
        found = detector.detect(lf.image, lf.pixel_size_um)
        seconds = time.perf_counter() - start
        boxes = np.asarray([d.bbox for d in found], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray([d.score for d in found], dtype=np.float64)
        out.append(FieldDetections(lf, boxes, scores, seconds))
    return out


def count(
    results: Sequence[FieldDetections], score_threshold: float, iou: float = 0.5
) -> DetectionCounts:
    """Counts over ``results`` keeping detections scored >= ``score_threshold``."""
    counts = DetectionCounts()
    for r in results:
        keep = r.scores >= score_threshold
        m = match_detections(r.boxes[keep], r.scores[keep], r.field.boxes, iou, r.field.ignore)
        counts.true_positives += m.true_positives
        counts.false_positives += m.false_positives
        counts.false_negatives += m.false_negatives
        counts.ignored += m.ignored
        counts.fields += 1
        kept_boxes, kept_scores = r.boxes[keep], r.scores[keep]
        if r.field.box_classes:
            missed = set(m.missed)
            for j, cls in enumerate(r.field.box_classes):
                tally = counts.per_class.setdefault(cls, [0, 0])
                tally[1 if j in missed else 0] += 1
        for j in m.missed:
            box = ", ".join(f"{v:.0f}" for v in r.field.boxes[j])
            counts.errors.append(f"{r.field.name}: missed cell at ({box})")
        for i in m.spurious:
            box = ", ".join(f"{v:.0f}" for v in kept_boxes[i])
            counts.errors.append(
                f"{r.field.name}: false positive at ({box}) score {kept_scores[i]:.2f}"
            )
    return counts


def sweep(results: Sequence[FieldDetections], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    return [{"score": t, **count(results, t).summary()} for t in thresholds]


def fp32_detector(int8: CellDetector, models_dir: Path, threads: int) -> CellDetector | None:
    """The card's FP32 twin behind the same runtime code; None when training has not
    written it here (it is not committed)."""
    path = fp32_twin_path(models_dir, int8.card)
    if path is None:
        _log.warning("%s: no FP32 detector twin (written by training); FP32 skipped", models_dir)
        return None
    session = ort.InferenceSession(str(path), session_options(threads), ["CPUExecutionProvider"])
    return CellDetector(int8.card, session)


def shipped_pair(models_dir: Path, threads: int) -> dict[str, CellDetector]:
    """The shipped INT8 detector and, where training wrote it, its FP32 twin, as
    ``{"INT8": ..., "FP32": ...}``."""
    int8 = CellDetector.load(models_dir, threads)
    fp32 = fp32_detector(int8, models_dir, threads)
    return {"INT8": int8} | ({"FP32": fp32} if fp32 is not None else {})


def latency_ms(
    detector: CellDetector, image: np.ndarray, pixel_size_um: float, repeats: int = 10
) -> dict[str, float]:
    """Median and worst wall time of whole ``detect()`` calls after one warm-up (ms)."""
    detector.detect(image, pixel_size_um)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect(image, pixel_size_um)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {"median_ms": round(float(np.median(times)), 1), "max_ms": round(times[-1], 1)}

"""Metrics of the white-cell classifier, shared by training, shipping and evaluation.

Also the confidence calibration: temperature scaling (Guo et al. 2017) fitted on the
validation logits, and the choice of the ``unidentified`` threshold.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from classifier_data import CLASSES, FIVE_CLASSES


def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def pbc_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred = logits.argmax(1)
    cm = confusion(labels, pred, len(CLASSES))
    recall = {c: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(CLASSES)}
    precision = {c: float(cm[i, i] / max(cm[:, i].sum(), 1)) for i, c in enumerate(CLASSES)}
    return {
        "accuracy": float((pred == labels).mean()),
        "n": len(labels),
        "recall": recall,
        "precision": precision,
        "support": {c: int(cm[i].sum()) for i, c in enumerate(CLASSES)},
        "confusion": cm.tolist(),
    }


def five_class_metrics(logits: np.ndarray, truth: list[str]) -> dict[str, Any]:
    """5-class accuracy (the cross-lab sets: Raabin, BCCD, LISC; PBC's five white cells).

    Strict: a prediction outside the five white-cell classes counts as wrong.
    """
    pred = [CLASSES[i] for i in logits.argmax(1)]
    cols = [*FIVE_CLASSES, "other"]
    cm = np.zeros((len(FIVE_CLASSES), len(cols)), np.int64)
    for t, p in zip(truth, pred, strict=True):
        cm[FIVE_CLASSES.index(t), cols.index(p) if p in FIVE_CLASSES else len(cols) - 1] += 1
    correct = np.trace(cm[:, : len(FIVE_CLASSES)])
    recall = {c: float(cm[i, i] / max(cm[i].sum(), 1)) for i, c in enumerate(FIVE_CLASSES)}
    # Secondary figure: told that the crop holds one of the five white cells, which one?
    # It separates "wrong white-cell type" from "not taken for a white cell at all".
    five = [CLASSES.index(c) for c in FIVE_CLASSES]
    among_five = [FIVE_CLASSES[i] for i in logits[:, five].argmax(1)]
    return {
        "accuracy": float(correct / max(len(truth), 1)),
        "accuracy_among_five": float(
            np.mean([p == t for p, t in zip(among_five, truth, strict=True)]) if truth else 0.0
        ),
        "n": len(truth),
        "recall": recall,
        "balanced_accuracy": float(
            np.mean([recall[c] for c in FIVE_CLASSES if cm[FIVE_CLASSES.index(c)].sum()])
        ),
        "predicted": {c: pred.count(c) for c in CLASSES},
        "confusion_rows": list(FIVE_CLASSES),
        "confusion_cols": cols,
        "confusion": cm.tolist(),
    }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(p, 1e-12)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (golden-section search on log T)."""
    lo, hi = np.log(0.05), np.log(20.0)
    phi = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a = hi - phi * (hi - lo)
        b = lo + phi * (hi - lo)
        if nll(logits, labels, float(np.exp(a))) < nll(logits, labels, float(np.exp(b))):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def unidentified_stats(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    conf = probs.max(1)
    kept = conf >= threshold
    correct = probs.argmax(1) == labels
    return {
        "threshold": threshold,
        "unidentified_fraction": float(1 - kept.mean()),
        "accuracy_of_identified": float(correct[kept].mean()) if kept.any() else float("nan"),
        "errors_caught_fraction": float((~kept & ~correct).sum() / max((~correct).sum(), 1)),
    }


def choose_threshold(
    probs: np.ndarray,
    labels: np.ndarray,
    target_accuracy: float = 0.995,
    max_unidentified: float = 0.03,
) -> float:
    """The lowest confidence cut whose identified cells reach ``target_accuracy`` on val.

    Never more than ``max_unidentified`` of the validation cells may be cut: a cell
    reported ``unidentified`` costs a reviewer's look, so the cut is kept small on
    clean data and earns its keep on unfamiliar cells (low calibrated confidence).
    """
    conf = np.sort(probs.max(1))
    cap = float(conf[int(max_unidentified * len(conf))])
    for t in np.round(np.arange(0.30, 0.99, 0.01), 2):
        if t > cap:
            break
        if unidentified_stats(probs, labels, float(t))["accuracy_of_identified"] >= target_accuracy:
            return float(t)
    return float(np.floor(min(cap, 0.98) * 100) / 100)

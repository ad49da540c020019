"""Measure the shipped classifier in every lab, from its files alone, through the runtime.

    .venv/bin/python scripts/eval_crosslab.py [--models DIR] [--data DIR] [--json FILE]

The device is judged on labs it never saw, so this prints, for the shipped INT8 model
(and its FP32 twin where training left one), one block per image set:

* PBC val (the training lab's own held-out cells, CellaVision): 8-class accuracy, and
  its five white cells alone;
* Raabin val (the second training lab, other slides than its train split);
* BCCD and LISC, never trained or tuned on: 5-class, strict (an answer outside the
  five white cells is wrong). BCCD cells are cut at their boxes' centres (the
  classifier alone); LISC fields go through the whole field analysis (detector, then
  classifier) and a field counts right only when its white cell is found *and* named
  (``scripts/lisc_boxes.csv`` gives where it is);
* the simulated fields (PBC val cells on the virtual slide) and their differential.

For each: accuracy, balanced accuracy, per-class recall, the ``unidentified`` rate
(calibrated confidence under the card's threshold) and the confusion table over every
answer the device can give, so what one lab's cells are taken for is visible.
``ship_classifier.py`` writes these numbers into the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier_data import (
    BCCD_PIXEL_SIZE_UM,
    CLASSES,
    DEFAULT_DATA,
    FIVE_CLASSES,
    IGNORE,
    PBC_PIXEL_SIZE_UM,
    REPO,
    bccd_fields,
    read_boxes,
)
from classifier_metrics import five_class_metrics, pbc_metrics
from sim_check_classifier import sim_cells, sim_metrics

from agent.vision.classifier import UNIDENTIFIED, CellCall, CellClassifier
from agent.vision.detector import CellDetector
from agent.vision.field_analysis import FieldAnalyzer
from agent.vision.model_card import fp32_twin_path, shipped_models_dir
from agent.vision.runtime import LoadedModel, session_options

_log = logging.getLogger("eval_crosslab")

MISSED = "missed"
"""LISC: the detector found no cell at the white cell's place."""
DEFAULT_LISC_BOXES = REPO / "scripts" / "lisc_boxes.csv"
SETS = ("pbc_val", "raabin_val", "bccd", "lisc", "sim")


def fp32_classifier(int8: CellClassifier, models_dir: Path, threads: int) -> CellClassifier | None:
    """The card's FP32 twin behind the same pre-processing; None when training has not
    written it here (it is not committed)."""
    import onnxruntime as ort

    path = fp32_twin_path(models_dir, int8.card)
    if path is None:
        _log.warning("%s: no FP32 twin (written by training); FP32 skipped", models_dir)
        return None
    sess = ort.InferenceSession(str(path), session_options(threads), ["CPUExecutionProvider"])
    return CellClassifier(LoadedModel(card=int8.card, path=path, session=sess))


def read_images(folder: Path, classes: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
    """Every ``<class>/*.jpg`` under ``folder`` (BGR) and its class."""
    images, labels = [], []
    for name in classes:
        for path in sorted((folder / name).glob("*.jpg")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"{path}: cannot read")
            images.append(bgr)
            labels.append(name)
    return images, labels


def pbc_val(data: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = read_images(data / "pbc" / "val", CLASSES)
    return images, np.array([CLASSES.index(c) for c in labels])


@dataclass
class Answers:
    """What the device said about each cell of a set (None: not found)."""

    truth: list[str]
    calls: list[CellCall | None]
    fields: list[str] | None = None
    """Which field each cell is in (LISC), for the per-field figure."""

    def fields_right(self) -> float:
        """Fraction of fields whose every white cell is found and named right."""
        assert self.fields is not None
        right: dict[str, bool] = {}
        for field, t, call in zip(self.fields, self.truth, self.calls, strict=True):
            ok = call is not None and call.top_label == t
            right[field] = right.get(field, True) and ok
        return sum(right.values()) / max(len(right), 1)


def logits_of(answers: Answers, labels: Sequence[str]) -> np.ndarray:
    """Log-probabilities per cell; a cell not found gets a row that names no class."""
    rows = []
    for call in answers.calls:
        if call is None:
            rows.append(np.full(len(labels), -np.inf))
            rows[-1][labels.index("platelet")] = 0.0  # outside the five: counted wrong
        else:
            rows.append(np.log(np.maximum([call.probabilities[x] for x in labels], 1e-12)))
    return np.array(rows)


def confusion_table(answers: Answers, rows: Sequence[str]) -> dict[str, Any]:
    """Truth x every answer the device gives (top label; ``unidentified``; ``missed``)."""
    cols = [*CLASSES, UNIDENTIFIED, MISSED]
    m = np.zeros((len(rows), len(cols)), np.int64)
    for t, call in zip(answers.truth, answers.calls, strict=True):
        answer = MISSED if call is None else call.label
        m[rows.index(t), cols.index(answer)] += 1
    keep = [j for j, c in enumerate(cols) if m[:, j].any() or c in rows]
    return {"rows": list(rows), "cols": [cols[j] for j in keep], "matrix": m[:, keep].tolist()}


def set_metrics(answers: Answers, labels: Sequence[str], eight_class: bool) -> dict[str, Any]:
    logits = logits_of(answers, labels)
    if eight_class:
        out = pbc_metrics(logits, np.array([CLASSES.index(t) for t in answers.truth]))
        five = [i for i, t in enumerate(answers.truth) if t in FIVE_CLASSES]
        out["five"] = five_class_metrics(logits[five], [answers.truth[i] for i in five])
        rows: Sequence[str] = CLASSES
    else:
        out = five_class_metrics(logits, answers.truth)
        rows = FIVE_CLASSES
    found = [c for c in answers.calls if c is not None]
    out["unidentified_fraction"] = sum(c.label == UNIDENTIFIED for c in found) / max(len(found), 1)
    out["found"] = len(found)
    out["table"] = confusion_table(answers, rows)
    return out


def lisc_answers(analyzer: FieldAnalyzer, data: Path, boxes_csv: Path) -> Answers:
    """Each LISC white cell: the detection whose centre lies in its box (best score)."""
    truth: list[str] = []
    calls: list[CellCall | None] = []
    where: list[str] = []
    for name, cells in sorted(read_boxes(boxes_csv).items()):
        bgr = cv2.imread(str(data / "lisc" / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"{data / 'lisc' / name}: cannot read field")
        findings = analyzer.analyze(bgr, PBC_PIXEL_SIZE_UM)
        for (x0, y0, x1, y1), cls in cells:
            if cls == IGNORE:
                continue
            inside = [f for f in findings if x0 <= f.centre[0] <= x1 and y0 <= f.centre[1] <= y1]
            best = max(inside, key=lambda f: f.detection_score, default=None)
            truth.append(cls)
            calls.append(best.call if best is not None else None)
            where.append(name)
    return Answers(truth, calls, where)


def evaluate(
    models_dir: Path,
    data: Path,
    threads: int,
    lisc_boxes: Path = DEFAULT_LISC_BOXES,
    bccd_pixel_size_um: float = BCCD_PIXEL_SIZE_UM,
) -> dict[str, Any]:
    """Every set on the shipped files; ``bccd_pixel_size_um`` is the scale the BCCD
    fields are taken to have (the data README's, unless measuring the sensitivity to it)."""
    int8 = CellClassifier.load(models_dir, threads=threads)
    detector = CellDetector.load(models_dir, threads=threads)
    pair = {"int8": int8, "fp32": fp32_classifier(int8, models_dir, threads)}
    pbc_images, pbc_labels = read_images(data / "pbc" / "val", CLASSES)
    raabin_images, raabin_labels = read_images(data / "raabin" / "val", FIVE_CLASSES)
    fields, skipped = bccd_fields(data)
    sim = sim_cells(data / "pbc" / "val", crop_px=int8.crop_px, reference_um=int8.pixel_size_um)
    result: dict[str, Any] = {
        "models_dir": str(models_dir),
        "sha256": int8.card.sha256,
        "detector_sha256": detector.card.sha256,
        "threshold": int8.threshold,
        "temperature": int8.temperature,
        "tta": int8.tta,
        "bccd_pixel_size_um": bccd_pixel_size_um,
        "bccd_skipped_fields": skipped,
    }
    for name, clf in ((k, c) for k, c in pair.items() if c is not None):
        labels = list(clf.labels)
        out: dict[str, Any] = {}
        start = time.perf_counter()
        pbc_calls: list[CellCall | None] = list(clf.classify(pbc_images, PBC_PIXEL_SIZE_UM))
        ms = 1000 * (time.perf_counter() - start) / len(pbc_images)
        out["pbc_val"] = set_metrics(Answers(pbc_labels, pbc_calls), labels, eight_class=True)
        out["pbc_val"]["ms_per_cell_end_to_end"] = ms
        raabin_calls: list[CellCall | None] = list(clf.classify(raabin_images, PBC_PIXEL_SIZE_UM))
        out["raabin_val"] = set_metrics(Answers(raabin_labels, raabin_calls), labels, False)
        truth: list[str] = []
        calls: list[CellCall | None] = []
        for field in fields:
            bgr = cv2.imread(str(field.path), cv2.IMREAD_COLOR)
            for call in clf.classify_at(bgr, field.centres, bccd_pixel_size_um):
                truth.append(field.label)
                calls.append(call)
        out["bccd"] = set_metrics(Answers(truth, calls), labels, False)
        if lisc_boxes.exists():
            lisc = lisc_answers(FieldAnalyzer(detector, clf), data, lisc_boxes)
            out["lisc"] = set_metrics(lisc, labels, False)
            out["lisc"]["fields"] = len(read_boxes(lisc_boxes))
            out["lisc"]["fields_right"] = lisc.fields_right()
        else:
            _log.warning("%s missing: LISC not measured", lisc_boxes)
        sim_calls = clf.classify_crops(sim.crops_bgr)
        out["sim"] = sim_metrics(
            [c.top_label for c in sim_calls], [c.label for c in sim_calls], sim.truth
        )
        out["sim"]["unidentified_fraction"] = sum(c.label == UNIDENTIFIED for c in sim_calls) / max(
            len(sim_calls), 1
        )
        result[name] = out
    return result


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def summary_table(r: dict[str, Any]) -> str:
    """One row per set: the headline figures (INT8, FP32 where measured)."""
    i8, f32 = r["int8"], r.get("fp32")
    head = [
        "| set | n | accuracy % (INT8) | FP32 % | balanced % | lowest recall | unidentified % |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for key, title in (
        ("pbc_val", "PBC val, 8-class"),
        ("pbc_five", "PBC val, its five white cells, 5-class"),
        ("raabin_val", "Raabin val, 5-class"),
        ("bccd", "BCCD, 5-class strict (cells at box centres)"),
        ("lisc", "LISC, 5-class strict (found and right / all white cells)"),
    ):
        src = "pbc_val" if key == "pbc_five" else key
        if src not in i8:
            continue
        m = i8[src]["five"] if key == "pbc_five" else i8[src]
        fm = None
        if f32 is not None and src in f32:
            fm = f32[src]["five"] if key == "pbc_five" else f32[src]
        recall = m["recall"]
        low = min(recall, key=lambda c: recall[c])
        balanced = m.get("balanced_accuracy")
        if balanced is None:
            balanced = float(np.mean([recall[c] for c in recall if m["support"][c]]))
        rows.append(
            f"| {title} | {m['n']} | {pct(m['accuracy'], 2)} | "
            f"{pct(fm['accuracy'], 2) if fm else '-'} | {pct(balanced)} | "
            f"{low} {pct(recall[low])} | {pct(i8[src]['unidentified_fraction'])} |"
        )
    return "\n".join(head + rows)


def recall_table(r: dict[str, Any]) -> str:
    """Per-class recall (INT8) of every set, side by side."""
    i8 = r["int8"]
    sets = [s for s in ("pbc_val", "raabin_val", "bccd", "lisc") if s in i8]
    lines = [
        "| class | " + " | ".join(f"{s} recall % (n)" for s in sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    for c in CLASSES:
        cells = []
        for s in sets:
            rec, sup = i8[s]["recall"], i8[s].get("support")
            if c not in rec:
                cells.append("")
                continue
            n = sup[c] if sup else sum(i8[s]["table"]["matrix"][i8[s]["table"]["rows"].index(c)])
            cells.append(f"{pct(rec[c])} ({n})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def confusion_markdown(table: dict[str, Any]) -> str:
    cols = table["cols"]
    lines = [
        "| truth \\ answer | " + " | ".join(c[:6] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row, values in zip(table["rows"], table["matrix"], strict=True):
        if sum(values):
            lines.append(f"| {row} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines)


def report(r: dict[str, Any]) -> str:
    i8 = r["int8"]
    out = [
        f"classifier {r['sha256'][:16]}..., detector {r['detector_sha256'][:16]}..., "
        f"TTA {r['tta']}, unidentified below {r['threshold']} (T {r['temperature']:.3f}); "
        f"BCCD at {r['bccd_pixel_size_um']:.4f} um/px",
        "",
        summary_table(r),
        "",
        recall_table(r),
    ]
    for s, title in (
        ("pbc_val", "PBC val"),
        ("raabin_val", "Raabin val"),
        ("bccd", "BCCD"),
        ("lisc", "LISC"),
    ):
        if s in i8:
            out += ["", f"{title} (INT8): truth x answer", confusion_markdown(i8[s]["table"])]
    if "lisc" in i8:
        lisc = i8["lisc"]
        out.insert(
            3,
            f"LISC per field: {pct(lisc['fields_right'])} % of the {lisc['fields']} fields have "
            "every white cell found and named right.\n",
        )
    sim = i8["sim"]
    out += [
        "",
        f"simulated fields (PBC val cells on the virtual slide, n = {sim['n']}): accuracy "
        f"{pct(sim['accuracy'])} %, unidentified {pct(sim['unidentified_fraction'])} %",
        "| white cell | truth /100 | classified /100 | difference |",
        "|---|---|---|---|",
    ]
    for c, d in sim["differential"].items():
        out.append(
            f"| {c} | {d['truth']:.1f} | {d['classified']:.1f} | {d['classified'] - d['truth']:+.1f} |"
        )
    out.append(
        f"largest differential error {sim['largest_differential_error']:.1f} points (limit 3)"
    )
    out.append(
        f"ms per cell end to end (PBC val, batched, this machine, INT8): "
        f"{i8['pbc_val']['ms_per_cell_end_to_end']:.2f}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=shipped_models_dir())
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lisc-boxes", type=Path, default=DEFAULT_LISC_BOXES)
    p.add_argument("--json", type=Path, help="also write the full results here")
    p.add_argument(
        "--bccd-pixel-size",
        type=float,
        default=BCCD_PIXEL_SIZE_UM,
        metavar="UM",
        help=(
            "um per pixel of the BCCD fields (default: the data README's 7.5 um / 105 px); "
            "another value measures how the cross-lab check depends on that calibration"
        ),
    )
    args = p.parse_args(argv)
    if not args.bccd_pixel_size > 0:
        p.error("--bccd-pixel-size must be positive")
    logging.basicConfig(level=logging.WARNING)
    result = evaluate(args.models, args.data, args.threads, args.lisc_boxes, args.bccd_pixel_size)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

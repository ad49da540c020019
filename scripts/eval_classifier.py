"""Measure the shipped classifier again, from its files alone, through the runtime API.

    .venv/bin/python scripts/eval_classifier.py [--models DIR] [--data DIR] [--json FILE]

prints every number the model card reports: PBC val per-class recall/precision and
confusion for INT8 (``CellClassifier``, the agent's own code path: rescale, crop, stain
normalisation, onnxruntime) and FP32 (the card's ``fp32_file`` through the same code),
the BCCD cross-lab 5-class accuracy and confusion (``classify_at`` on the whole fields
at 0.0714 um/px, cells at their WBC box centres), the simulated-field check
(``sim_check_classifier.py``: per-class recall and white-cell differential), the
``unidentified`` rates, latency. ``ship_classifier.py`` writes these numbers into the card.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier_data import (
    BCCD_CLASSES,
    BCCD_PIXEL_SIZE_UM,
    CLASSES,
    DEFAULT_DATA,
    PBC_PIXEL_SIZE_UM,
    bccd_fields,
)
from classifier_metrics import bccd_metrics, pbc_metrics, unidentified_stats
from sim_check_classifier import sim_cells, sim_metrics

from agent.vision.classifier import CellClassifier
from agent.vision.model_card import fp32_twin_path, shipped_models_dir
from agent.vision.runtime import LoadedModel, session_options

_log = logging.getLogger("eval_classifier")


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


def pbc_val(data: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = [], []
    for i, name in enumerate(CLASSES):
        for path in sorted((data / "pbc" / "val" / name).glob("*.jpg")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"{path}: cannot read")
            images.append(bgr)
            labels.append(i)
    return images, np.array(labels)


def evaluate(
    models_dir: Path, data: Path, threads: int, bccd_pixel_size_um: float = BCCD_PIXEL_SIZE_UM
) -> dict[str, Any]:
    """Every check on the shipped files; ``bccd_pixel_size_um`` is the scale the BCCD
    fields are taken to have (the data README's, unless measuring the sensitivity to it)."""
    int8 = CellClassifier.load(models_dir, threads=threads)
    pair = {"int8": int8, "fp32": fp32_classifier(int8, models_dir, threads)}
    images, labels = pbc_val(data)
    fields, skipped = bccd_fields(data)
    sim = sim_cells(data / "pbc" / "val", crop_px=int8.crop_px, reference_um=int8.pixel_size_um)
    result: dict[str, Any] = {"models_dir": str(models_dir), "sha256": int8.card.sha256}
    for name, clf in ((k, c) for k, c in pair.items() if c is not None):
        start = time.perf_counter()
        calls = clf.classify(images, PBC_PIXEL_SIZE_UM)
        elapsed = time.perf_counter() - start
        probs = np.array([[c.probabilities[x] for x in clf.labels] for c in calls])
        pbc = pbc_metrics(np.log(np.maximum(probs, 1e-12)), labels)
        pbc["ms_per_cell_end_to_end"] = 1000 * elapsed / len(images)
        pbc["unidentified"] = unidentified_stats(probs, labels, clf.threshold)
        truth, bprobs = [], []
        for field in fields:
            bgr = cv2.imread(str(field.path), cv2.IMREAD_COLOR)
            for call in clf.classify_at(bgr, field.centres, bccd_pixel_size_um):
                truth.append(field.label)
                bprobs.append([call.probabilities[x] for x in clf.labels])
        bp = np.array(bprobs)
        bccd = bccd_metrics(np.log(np.maximum(bp, 1e-12)), truth)
        bccd["skipped_fields"] = skipped
        bccd["pixel_size_um"] = bccd_pixel_size_um
        bccd["unidentified"] = unidentified_stats(
            bp, np.array([CLASSES.index(t) for t in truth]), clf.threshold
        )
        sim_calls = clf.classify_crops(sim.crops_bgr)
        sim_result = sim_metrics(
            [c.top_label for c in sim_calls], [c.label for c in sim_calls], sim.truth
        )
        result[name] = {"pbc_val": pbc, "bccd": bccd, "sim": sim_result}
    result["threshold"] = int8.threshold
    result["temperature"] = int8.temperature
    result["tta"] = int8.tta
    return result


def fp32_text(r: dict[str, Any], *path: str, scale: float = 100.0, digits: int = 1) -> str:
    """A number of the FP32 results, or "-" when there was no FP32 twin to measure."""
    value: Any = r.get("fp32")
    for key in path:
        if value is None:
            break
        value = value[key]
    return "-" if value is None else f"{scale * value:.{digits}f}"


def report(r: dict[str, Any]) -> str:
    out = []
    i8 = r["int8"]
    out.append(f"models: {r['models_dir']} (sha256 {r['sha256'][:16]}...), TTA {r['tta']}")
    out.append(
        f"PBC val accuracy: INT8 {100 * i8['pbc_val']['accuracy']:.2f} %, "
        f"FP32 {fp32_text(r, 'pbc_val', 'accuracy', digits=2)} % (n = {i8['pbc_val']['n']})"
    )
    out.append("")
    out.append(
        "| class | n | INT8 recall % | INT8 precision % | FP32 recall % | FP32 precision % |"
    )
    out.append("|---|---|---|---|---|---|")
    for c in CLASSES:
        out.append(
            f"| {c} | {i8['pbc_val']['support'][c]} | {100 * i8['pbc_val']['recall'][c]:.1f} | "
            f"{100 * i8['pbc_val']['precision'][c]:.1f} | {fp32_text(r, 'pbc_val', 'recall', c)} | "
            f"{fp32_text(r, 'pbc_val', 'precision', c)} |"
        )
    out.append("")
    out.append("PBC val confusion (INT8), rows truth, columns predicted:")
    out.append("| | " + " | ".join(c[:5] for c in CLASSES) + " |")
    out.append("|---|" + "---|" * len(CLASSES))
    for c, row in zip(CLASSES, i8["pbc_val"]["confusion"], strict=True):
        out.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    out.append("")
    b = i8["bccd"]
    out.append(
        f"BCCD 5-class accuracy: INT8 {100 * b['accuracy']:.1f} %, FP32 "
        f"{fp32_text(r, 'bccd', 'accuracy')} %, INT8 balanced {100 * b['balanced_accuracy']:.1f} % "
        f"(n = {b['n']}; fields taken at {b['pixel_size_um']:.4f} um/px; "
        f"skipped fields {b['skipped_fields']})"
    )
    out.append("| truth \\ predicted | " + " | ".join(b["confusion_cols"]) + " |")
    out.append("|---|" + "---|" * len(b["confusion_cols"]))
    for c, row in zip(BCCD_CLASSES, b["confusion"], strict=True):
        out.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    out.append(f"BCCD predicted (INT8): {b['predicted']}")
    out.append(
        "BCCD accuracy when the answer must be one of the five white cells (arg-max over "
        f"those five only; secondary): INT8 {100 * b['accuracy_among_five']:.1f} %, FP32 "
        f"{fp32_text(r, 'bccd', 'accuracy_among_five')} %"
    )
    out.append("")
    u, ub = i8["pbc_val"]["unidentified"], b["unidentified"]
    out.append(
        f"unidentified (confidence < {r['threshold']}, T = {r['temperature']:.3f}): PBC val "
        f"{100 * u['unidentified_fraction']:.2f} % of cells, accuracy of the rest "
        f"{100 * u['accuracy_of_identified']:.2f} %, {100 * u['errors_caught_fraction']:.0f} % of "
        f"errors caught; BCCD {100 * ub['unidentified_fraction']:.1f} % of cells, 8-class accuracy "
        f"of the rest {100 * ub['accuracy_of_identified']:.1f} %"
    )
    sim = i8["sim"]
    out.append("")
    out.append(
        f"simulated fields (PBC val cells on synthetic smears, n = {sim['n']}): accuracy INT8 "
        f"{100 * sim['accuracy']:.1f} %, FP32 {fp32_text(r, 'sim', 'accuracy')} %"
    )
    out.append("| class | n | INT8 recall % |\n|---|---|---|")
    for c, v in sim["recall"].items():
        out.append(f"| {c} | {sim['support'][c]} | {100 * v:.1f} |")
    out.append(
        "| white cell | truth /100 | classified /100 (INT8) | difference |\n|---|---|---|---|"
    )
    for c, d in sim["differential"].items():
        out.append(
            f"| {c} | {d['truth']:.1f} | {d['classified']:.1f} | {d['classified'] - d['truth']:+.1f} |"
        )
    out.append(
        f"largest differential error {sim['largest_differential_error']:.1f} points (limit 3)"
    )
    out.append("")
    out.append(
        f"end-to-end ms per cell (PBC val, batched, this machine): INT8 "
        f"{i8['pbc_val']['ms_per_cell_end_to_end']:.2f}, FP32 "
        f"{fp32_text(r, 'pbc_val', 'ms_per_cell_end_to_end', scale=1.0, digits=2)}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=shipped_models_dir())
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2)
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
    result = evaluate(args.models, args.data, args.threads, args.bccd_pixel_size)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

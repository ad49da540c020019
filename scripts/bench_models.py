#!/usr/bin/env python3
"""Accuracy and latency of both shipped models, FP32 and INT8, with 1 thread and all threads.

    .venv/bin/python scripts/bench_models.py [--models DIR] [--data DIR] [--repeats N]

- classifier: top-1 accuracy on PBC val (8 classes, through ``CellClassifier.classify``,
  the agent's code path), latency per cell (one crop per call, and per cell in a batch
  of 32 crops);
- detector: white-cell recall and precision at IoU 0.5 on the held-out BCCD validation
  fields and on the simulated validation fields (rendered once, cached in /tmp),
  latency per 2028x1520 field at 0.2 um/px (the whole ``detect()`` call).

FP32 models are the cards' ``fp32_file`` twins (sha256-checked), run behind the same
pre- and post-processing as INT8; training writes them, they are not committed, so on a
fresh clone only INT8 rows are printed. Latency is the median of ``--repeats`` calls after a
warm-up; other processes on the machine inflate it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from detector_data import load_bccd  # noqa: E402
from detector_eval import count, run_detector, shipped_pair  # noqa: E402
from detector_sim import validation_fields  # noqa: E402
from eval_crosslab import fp32_classifier, pbc_val  # noqa: E402

from agent.commands.bench import median_ms  # noqa: E402
from agent.vision.classifier import CellClassifier  # noqa: E402
from agent.vision.model_card import shipped_models_dir  # noqa: E402
from agent.vision.synthetic_field import synthetic_field  # noqa: E402

FIELD = (2028, 1520)


def classifier_pair(models_dir: Path, threads: int) -> dict[str, CellClassifier]:
    """INT8, and FP32 where training has written the twin here."""
    int8 = CellClassifier.load(models_dir, threads)
    fp32 = fp32_classifier(int8, models_dir, threads)
    return {"INT8": int8} | ({"FP32": fp32} if fp32 is not None else {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=shipped_models_dir())
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1
    settings = [("1 thread", 1), (f"{cores} threads", 0)]
    print(f"bench_models: {cores} CPU cores, onnxruntime {ort.__version__}, models {args.models}")

    images, labels = pbc_val(args.data)
    batch = images[:32]
    print("\nclassifier (PBC val, 8 classes)")
    print(
        "| model | top-1 accuracy | ms/cell, 1 per call: 1 thread | all | ms/cell in a batch of 32: 1 thread | all |"
    )
    print("|---|---|---|---|---|---|")
    rows: dict[str, list[str]] = {}
    for _, threads in settings:
        for name, clf in classifier_pair(args.models, threads).items():
            row = rows.setdefault(name, [])
            if not row:
                calls = clf.classify(images, 0.2)
                top = np.array([clf.labels.index(c.top_label) for c in calls])
                row.append(f"{100 * float(np.mean(top == labels)):.2f} % (n = {len(labels)})")
            one = median_ms(lambda c=clf: c.classify(batch[:1], 0.2), args.repeats)
            many = median_ms(lambda c=clf: c.classify(batch, 0.2), args.repeats) / len(batch)
            row.extend([f"{one:.2f}", f"{many:.2f}"])
    for name, row in rows.items():
        acc, one1, many1, one_all, many_all = row
        print(f"| {name} | {acc} | {one1} | {one_all} | {many1} | {many_all} |")

    bccd = load_bccd(args.data / "bccd", "val")
    sim = validation_fields(args.data)
    field, _ = synthetic_field(*FIELD, pixel_size_um=0.2)
    timing_field = sim[0].image if sim else field
    timing_note = "simulated validation field" if sim else "synthetic field"
    print(
        f"\ndetector (white cells, IoU 0.5; latency on a {FIELD[0]}x{FIELD[1]} {timing_note} at 0.2 um/px)"
    )
    header = "| model | BCCD val recall / precision |"
    if sim:
        header += " simulated val recall / precision |"
    print(header + " ms/field: 1 thread | all threads |")
    print("|---|---|" + ("---|" if sim else "") + "---|---|")
    drows: dict[str, list[str]] = {}
    for _, threads in settings:
        for name, det in shipped_pair(args.models, threads).items():
            row = drows.setdefault(name, [])
            if not row:
                for fields in (bccd, sim) if sim else (bccd,):
                    c = count(run_detector(det, fields), det.card.thresholds["score"])
                    row.append(
                        f"{100 * c.recall:.2f} % / {100 * c.precision:.2f} % "
                        f"(TP {c.true_positives}, FP {c.false_positives}, FN {c.false_negatives})"
                    )
            ms = median_ms(lambda d=det: d.detect(timing_field, 0.2), args.repeats)
            row.append(f"{ms:.1f}")
    for name, row in drows.items():
        print(f"| {name} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Time the report stage of one sample on this machine: merge, store, report, pictures, FHIR.

A synthetic scan at the analyzer's geometry (2028 x 1520 px fields at 0.2 um/px,
5 % overlap) with white cells scattered on the slide, each field a real image the
crops are cut from; the store is a temporary state directory. Prints one line per
stage (median of --repeat samples).

    .venv/bin/python scripts/bench_report.py --cells 500 --repeat 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.acquisition.field import FieldImage  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.report.classes import WBC_CLASSES  # noqa: E402
from agent.report.dedup import FieldCell  # noqa: E402
from agent.report.fhir import to_fhir_bundle  # noqa: E402
from agent.report.model import Timings  # noqa: E402
from agent.report.service import ReportService  # noqa: E402
from agent.report.table import render_table  # noqa: E402

W, H, PX = 2028, 1520, 0.2
OVERLAP = 0.05
MIX = {"neutrophil": 58, "lymphocyte": 30, "monocyte": 6, "eosinophil": 3, "basophil": 1, "ig": 2}


def one_sample(state: Path, n_cells: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    fw, fh = W * PX, H * PX
    step_x, step_y = fw * (1 - OVERLAP), fh * (1 - OVERLAP)
    # Enough fields for n_cells at ~12 white cells per field.
    cols = 6
    rows = max(1, -(-n_cells // (12 * cols)))
    slide_w, slide_h = step_x * (cols - 1) + fw, step_y * (rows - 1) + fh
    cells = []
    labels = list(MIX)
    weights = list(MIX.values())
    for _ in range(n_cells):
        d = rng.uniform(10, 16)
        x, y = rng.uniform(0, slide_w - d), rng.uniform(0, slide_h - d)
        cells.append((x, y, x + d, y + d, rng.choices(labels, weights)[0]))
    config = parse_config(f"device_id: bench\nstorage:\n  state_dir: {state}\n", "bench.yaml", {})
    service = ReportService(config)
    times = {"add_field": 0.0}
    run = service.begin_sample(f"B-{seed}", target_wbc=n_cells)
    index = 0
    background = np.full((H, W, 3), (200, 190, 230), np.uint8)
    for r in range(rows):
        for c in range(cols):
            cx, cy = c * step_x + fw / 2, r * step_y + fh / 2
            x0, y0 = cx - fw / 2, cy - fh / 2
            image = background.copy()
            found = []
            for bx0, by0, bx1, by1, label in cells:
                px0, py0 = (bx0 - x0) / PX, (by0 - y0) / PX
                px1, py1 = (bx1 - x0) / PX, (by1 - y0) / PX
                if px1 <= 0 or py1 <= 0 or px0 >= W or py0 >= H:
                    continue
                box = (max(0.0, px0), max(0.0, py0), min(float(W), px1), min(float(H), py1))
                centre = (round((px0 + px1) / 2), round((py0 + py1) / 2))
                cv2.circle(image, centre, round((px1 - px0) / 2), (150, 60, 120), -1)
                found.append(FieldCell(box, label, label, 0.9, {label: 0.9}))
            field = FieldImage(index, image, cx, cy, 0.0, PX, 1.0, True, time.time())
            t = time.perf_counter()
            run.add_field(field, found)
            times["add_field"] += time.perf_counter() - t
            index += 1
    t = time.perf_counter()
    report = run.finish(Timings(total_s=0, acquisition_s=0, analysis_s=0, waiting_s=0))
    times["finish (report + store + pictures + prune)"] = time.perf_counter() - t
    t = time.perf_counter()
    bundle = to_fhir_bundle(report)
    times["fhir bundle"] = time.perf_counter() - t
    t = time.perf_counter()
    render_table(report)
    times["render_table"] = time.perf_counter() - t
    t = time.perf_counter()
    service.reclassify(report.sample_id, 1, "artefact", "bench")
    times["reclassify (amended report + pictures)"] = time.perf_counter() - t
    times["fields"] = index
    times["cells counted"] = report.wbc_counted + report.unidentified
    times["sample MB on disk"] = service.store.sample(report.sample_id).bytes / 1e6
    times["fhir bytes"] = len(str(bundle))
    counted = sum(report.differential[c].count for c in WBC_CLASSES)
    assert counted == report.wbc_counted
    service.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_sample(Path(tmp), args.cells, seed=i))
    counts = {"fields", "cells counted", "sample MB on disk", "fhir bytes"}
    for key in runs[0]:
        value = statistics.median(r[key] for r in runs)
        shown = f"{1000 * value:10.1f} ms" if key not in counts else f"{value:10.1f}"
        print(f"{key:<45} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

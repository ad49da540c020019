#!/usr/bin/env python3
"""Measure the shipped detector again, from its files alone, through the runtime API.

    .venv/bin/python scripts/eval_detector.py [--models DIR] [--data DIR] [--write-card]

White-cell recall and precision at IoU 0.5 (score >= the card's threshold), FP32 and
INT8, on:
- ``bccd_val``: the held-out BCCD fields (real photographs, another lab and camera);
- ``sim_val``: simulated validation fields (pbc/val cells, default class mix);
- ``sim_balanced``: simulated fields with every white-cell class equally common, for
  per-class recall of the rare classes;
- ``sim_demo``: slides as ``make run`` builds them (shipped demo library, 700 red cells
  per white cell);
and the latency of a whole ``detect()`` on a 2028x1520 simulated field, 1 thread and
all threads. ``--write-card`` replaces the card's metrics (and its Markdown) with these
numbers; the model files, their sha256 and the training record are left as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import detector_sim  # noqa: E402
from detector_data import load_bccd  # noqa: E402
from detector_eval import count, latency_ms, run_detector, shipped_pair, sweep  # noqa: E402

from agent.vision.model_card import fp32_twin_path, load_card, shipped_models_dir  # noqa: E402

SWEEP = (0.2, 0.3, 0.35, 0.4, 0.5, 0.6)


def evaluate(models: Path, data: Path, repeats: int) -> dict[str, Any]:
    sets = {
        "bccd_val": load_bccd(data / "bccd", "val"),
        "sim_val": detector_sim.validation_fields(data),
        "sim_balanced": detector_sim.balanced_fields(data),
        "sim_demo": detector_sim.demo_fields(),
    }
    pair = shipped_pair(models, threads=0)
    threshold = pair["INT8"].card.thresholds["score"]
    metrics: dict[str, Any] = {"iou": 0.5, "score_threshold": threshold}
    for label, det in pair.items():
        for name, fields in sets.items():
            results = run_detector(det, fields)
            c = count(results, threshold)
            metrics[f"{name}_{label.lower()}"] = c.summary()
            metrics[f"{name}_{label.lower()}_sweep"] = sweep(results, SWEEP)
            print(f"{label} {name}: {json.dumps(c.summary())}")
            for e in c.errors:
                print(f"    {e}")
    image = sets["sim_val"][0].image
    lat: dict[str, Any] = {
        "field": "2028x1520 px at 0.2 um/px (simulated validation field)",
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    for threads, key in ((1, "1_thread"), (0, "all_threads")):
        for label, det in shipped_pair(models, threads).items():
            lat[f"{label.lower()}_{key}"] = latency_ms(det, image, 0.2, repeats)
    metrics["latency_per_field_ms"] = lat
    print("latency " + json.dumps(lat))
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=shipped_models_dir())
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--write-card", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    card_path = args.models / "detector.card.json"
    if args.write_card and fp32_twin_path(args.models, load_card(card_path)) is None:
        print("--write-card needs the FP32 twin (written by training)", file=sys.stderr)
        return 1
    metrics = evaluate(args.models, args.data, args.repeats)
    if args.write_card:
        from train_detector import write_markdown

        data = json.loads(card_path.read_text(encoding="utf-8"))
        data["metrics"] = metrics
        card_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        card = load_card(card_path)
        write_markdown(args.models / "detector.md", card, metrics, data["training"])
        print(f"rewrote the metrics of {card_path} and {args.models / 'detector.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

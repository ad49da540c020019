"""Check the shipped classifier on cells of simulated fields (drivers.sim.slide).

    .venv/bin/python scripts/sim_check_classifier.py [--library DIR] [--cells N]

The simulated analyzer composites PBC cells, cut from their own background, onto a
synthetic red-cell background; its differential must match the truth within 3 points,
so the classifier must work on such composites too. Fields are rendered from the
monolayer at the reference scale, blurred (defocus) and noised like the virtual camera,
and every object is classified at its true centre with ``classify_at``. The library
defaults to the PBC *validation* split so no training cell is reused. Prints per-class
recall and the white-cell differential (per 100) against the truth. ``sim_cells`` and
``sim_metrics`` are also used by ``train_classifier.py`` to score experiments.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier_data import DEFAULT_DATA

from agent.vision.classifier import UNIDENTIFIED, CellClassifier
from agent.vision.model_card import shipped_models_dir
from agent.vision.preprocess import cells_in_field
from drivers.sim.config import SimulatorConfig
from drivers.sim.optics import gaussian_blur
from drivers.sim.slide import VirtualSlide
from drivers.sim.smear import Rect

FIELD = (1014, 760)
"""Field size (px at 0.2 um/px): half the camera's 2028 x 1520, cheaper to render."""
WHITE = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "ig")


@dataclass
class SimCells:
    crops_bgr: list[np.ndarray]
    """Reference-scale ``crop_px`` squares around every object, as ``classify_at`` cuts them."""
    truth: list[str]
    fields: int


def sim_cells(
    library: Path,
    cells: int = 400,
    seed: int = 3,
    rbc_per_wbc: float = 60.0,
    crop_px: int = 128,
    reference_um: float = 0.2,
) -> SimCells:
    """Render simulated fields and cut every object out at its true centre."""
    slide = VirtualSlide(SimulatorConfig(seed=seed, cell_library=library, rbc_per_wbc=rbc_per_wbc))
    rng = np.random.default_rng(seed)
    core = slide.monolayer_core()
    w_um, h_um = FIELD[0] * slide.pixel_size_um, FIELD[1] * slide.pixel_size_um
    truth: list[str] = []
    crops: list[np.ndarray] = []
    fields = 0
    y = core.y0 + h_um / 2
    while len(truth) < cells and y < core.y1:
        x = core.x0 + w_um / 2
        while len(truth) < cells and x < core.x1:
            gx0, gy0 = slide.pixel_origin(x, y, *FIELD)
            image = slide.render(x, y, *FIELD)
            sigma = float(rng.uniform(0.0, 1.5))  # defocus within the autofocus tolerance
            image = gaussian_blur(image, sigma) if sigma > 0.3 else image
            noise = rng.normal(0.0, rng.uniform(1.0, 4.0), image.shape)
            image = np.clip(image + noise, 0, 255).astype(np.uint8)
            margin = 8.0
            inner = Rect(
                gx0 * slide.pixel_size_um + margin,
                gy0 * slide.pixel_size_um + margin,
                (gx0 + FIELD[0]) * slide.pixel_size_um - margin,
                (gy0 + FIELD[1]) * slide.pixel_size_um - margin,
            )
            objects = slide.cells_in(inner)
            centres = [
                (o.x_um / slide.pixel_size_um - gx0, o.y_um / slide.pixel_size_um - gy0)
                for o in objects
            ]
            if objects:
                crops += cells_in_field(image, centres, slide.pixel_size_um, reference_um, crop_px)
                truth += [o.cls for o in objects]
            fields += 1
            x += w_um
        y += h_um
    return SimCells(crops, truth, fields)


def sim_metrics(top: list[str], labels: list[str], truth: list[str]) -> dict[str, Any]:
    """Per-class recall, accuracy and the white-cell differential error (points per 100).

    ``top`` are the top labels; ``labels`` the reported ones (``unidentified`` is not
    counted in the differential, as in the report).
    """
    recall = {
        cls: float(np.mean([top[i] == cls for i, t in enumerate(truth) if t == cls]))
        for cls in sorted(set(truth))
    }
    t_white = Counter(t for t in truth if t in WHITE)
    p_white = Counter(c for c in labels if c in WHITE)
    nt, np_ = sum(t_white.values()), sum(p_white.values())
    differential = {
        cls: {
            "truth": 100 * t_white[cls] / max(nt, 1),
            "classified": 100 * p_white[cls] / max(np_, 1),
        }
        for cls in WHITE
    }
    return {
        "n": len(truth),
        "accuracy": float(np.mean([a == b for a, b in zip(top, truth, strict=True)])),
        "recall": recall,
        "support": dict(Counter(truth)),
        "differential": differential,
        "largest_differential_error": max(
            abs(d["classified"] - d["truth"]) for d in differential.values()
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=shipped_models_dir())
    p.add_argument("--library", type=Path, default=DEFAULT_DATA / "pbc" / "val")
    p.add_argument("--cells", type=int, default=400, help="objects to classify")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--rbc-per-wbc", type=float, default=60.0, help="denser than life: faster")
    args = p.parse_args(argv)

    clf = CellClassifier.load(args.models, threads=2)
    sim = sim_cells(
        args.library, args.cells, args.seed, args.rbc_per_wbc, clf.crop_px, clf.pixel_size_um
    )
    calls = clf.classify_crops(sim.crops_bgr)
    m = sim_metrics([c.top_label for c in calls], [c.label for c in calls], sim.truth)
    print(f"{m['n']} objects on {sim.fields} simulated fields (library {args.library})")
    print("| class | n | recall % |\n|---|---|---|")
    for cls, r in m["recall"].items():
        print(f"| {cls} | {m['support'][cls]} | {100 * r:.1f} |")
    unidentified = sum(c.label == UNIDENTIFIED for c in calls)
    print(f"accuracy {100 * m['accuracy']:.1f} %; unidentified {unidentified}")
    print("| class | truth /100 | classified /100 | difference |\n|---|---|---|---|")
    for cls, d in m["differential"].items():
        a, b = d["truth"], d["classified"]
        print(f"| {cls} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    print(f"largest differential error {m['largest_differential_error']:.1f} points (limit 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

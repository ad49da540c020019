#!/usr/bin/env python3
"""Rebuild the demo cell library shipped with the simulator (drivers/sim/demo_cells).

Picks, per class, a fixed-seed random sample of PBC training images (CC BY 4.0) that
the simulator's segmentation cuts out cleanly: the cut succeeds, stays off the image
border, is compact (no red cell stuck to it) and has a typical size for its class.
Files are copied byte for byte (no re-encoding). Writes a contact sheet of the chosen
cut-outs next to the output if --sheet is given, for a visual check.

Usage: scripts/build_demo_cells.py [--source /work/shared/data/pbc/train] [--sheet sheet.png]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.sim.segmentation import SegmentationFailed, segment_cell  # noqa: E402

OUT = ROOT / "drivers" / "sim" / "demo_cells"
COUNTS = {
    "neutrophil": 72,
    "lymphocyte": 64,
    "monocyte": 64,
    "eosinophil": 56,
    "basophil": 48,
    "ig": 56,
    "erythroblast": 40,
    "platelet": 40,
}
MIN_SOLIDITY = {"monocyte": 0.86, "ig": 0.88}
DEFAULT_MIN_SOLIDITY = 0.9
EXCLUDE_FILE = Path(__file__).with_name("demo_cells_exclude.txt")
"""Files rejected by eye after looking at the contact sheet, one name per line."""
SEED = 20240611


def quality(image: np.ndarray, cls: str) -> tuple[float, float] | None:
    """(area, solidity) of a clean cut, or None if the cut is not usable."""
    try:
        mask = segment_cell(image).mask
    except SegmentationFailed:
        return None
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return None
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if len(contours) != 1:
        return None
    area = float(cv2.contourArea(contours[0]))
    hull = float(cv2.contourArea(cv2.convexHull(contours[0])))
    solidity = area / hull if hull > 0 else 0.0
    if solidity < MIN_SOLIDITY.get(cls, DEFAULT_MIN_SOLIDITY):
        return None
    return area, solidity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pbc" / "train",
    )
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of the chosen cells")
    args = parser.parse_args()
    excluded = set()
    if EXCLUDE_FILE.exists():
        excluded = {ln.strip() for ln in EXCLUDE_FILE.read_text().splitlines() if ln.strip()}
    rng = random.Random(SEED)
    rows = []
    for cls, count in COUNTS.items():
        files = sorted((args.source / cls).glob("*.jpg"))
        rng.shuffle(files)
        scored: list[tuple[Path, float]] = []
        for path in files:
            if path.name in excluded:
                continue
            image = cv2.imread(str(path))
            if image is None:
                continue
            q = quality(image, cls)
            if q is not None:
                scored.append((path, q[0]))
            if len(scored) >= count * 2:
                break
        areas = np.array([a for _, a in scored])
        lo, hi = np.percentile(areas, [5, 95])
        chosen = [p for p, a in scored if lo <= a <= hi][:count]
        dest = OUT / cls
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for path in chosen:
            shutil.copyfile(path, dest / path.name)
        print(f"{cls}: {len(chosen)} images")
        if args.sheet:
            tiles = []
            for path in chosen:
                image = cv2.imread(str(path))
                mask = segment_cell(image).mask
                vis = image.copy()
                cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(vis, cs, -1, (0, 200, 0), 1)
                cv2.putText(vis, path.stem[-6:], (2, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0))
                tiles.append(cv2.resize(vis, (120, 120)))
            while len(tiles) % 12:
                tiles.append(np.full((120, 120, 3), 255, np.uint8))
            rows.extend(np.hstack(tiles[i : i + 12]) for i in range(0, len(tiles), 12))
    if args.sheet and rows:
        cv2.imwrite(str(args.sheet), np.vstack(rows))
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"total {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

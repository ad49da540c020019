"""Pick the classifier's test fixture cells, independently of any model.

    .venv/bin/python scripts/classifier_fixtures.py [--data DIR] [--per-class 3]

For each lab and class, the ``--per-class`` validation images whose file names have the
smallest sha256 are written to ``tests/fixtures/``: PBC val (8 classes) and Raabin val
(5 classes) unmodified to ``cells/`` and ``cells_raabin/``; LISC (5 classes, whole fields
of another lab) as the 144 x 144 px square around the white cell's box
(``scripts/lisc_boxes.csv``), saved lossless as PNG, to ``cells_lisc/``. The choice
depends only on the names, never on what a model says about the cells, so the tests
that ask the shipped model to name them can fail when the model or the pre-processing
gets worse (a model-chosen set holds only cells the model already gets right).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier_data import CLASSES, DEFAULT_DATA, FIVE_CLASSES, IGNORE, REPO, read_boxes

from agent.vision.preprocess import crop_centred

FIXTURES = REPO / "tests" / "fixtures"
LISC_SIDE = 144


def by_name_hash(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: hashlib.sha256(p.name.encode("utf-8")).hexdigest())


def pick(val_dir: Path, classes: Sequence[str], per_class: int) -> dict[str, list[Path]]:
    """The ``per_class`` files of each class with the smallest sha256 of their name."""
    return {cls: by_name_hash((val_dir / cls).glob("*.jpg"))[:per_class] for cls in classes}


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def copy_files(chosen: dict[str, list[Path]], out: Path) -> None:
    for cls, files in chosen.items():
        folder = fresh(out / cls)
        for f in files:
            shutil.copy2(f, folder / f.name)
            print(f"{out.name}/{cls}/{f.name}")


def lisc_fixtures(data: Path, boxes_csv: Path, per_class: int, out: Path) -> None:
    """LISC fields with one white cell of the class, by name hash; the square around it."""
    boxes = read_boxes(boxes_csv)
    single = {
        name: cells[0]
        for name, cells in boxes.items()
        if len([c for c in cells if c[1] != IGNORE]) == 1 and cells[0][1] != IGNORE
    }
    for cls in FIVE_CLASSES:
        names = [n for n, (_, c) in single.items() if c == cls]
        chosen = by_name_hash(Path(n) for n in names)[:per_class]
        folder = fresh(out / cls)
        for path in chosen:
            (x0, y0, x1, y1), _ = single[str(path)]
            bgr = cv2.imread(str(data / "lisc" / path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"{data / 'lisc' / path}: cannot read")
            crop = crop_centred(bgr, ((x0 + x1) / 2.0, (y0 + y1) / 2.0), LISC_SIDE)
            target = folder / f"{path.stem}.png"
            cv2.imwrite(str(target), crop)
            print(f"{out.name}/{cls}/{target.name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--per-class", type=int, default=3)
    p.add_argument("--lisc-boxes", type=Path, default=REPO / "scripts" / "lisc_boxes.csv")
    p.add_argument("--out", type=Path, default=FIXTURES)
    args = p.parse_args(argv)
    copy_files(pick(args.data / "pbc" / "val", CLASSES, args.per_class), args.out / "cells")
    copy_files(
        pick(args.data / "raabin" / "val", FIVE_CLASSES, args.per_class),
        args.out / "cells_raabin",
    )
    lisc_fixtures(args.data, args.lisc_boxes, args.per_class, args.out / "cells_lisc")
    return 0


if __name__ == "__main__":
    sys.exit(main())

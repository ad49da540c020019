"""Pick the classifier's test fixture cells, independently of any model.

    .venv/bin/python scripts/classifier_fixtures.py [--data DIR] [--per-class 3]

For each class, the ``--per-class`` PBC *validation* images whose file names have the
smallest sha256 are copied unmodified to ``tests/fixtures/cells/<class>/``. The choice
depends only on the names, never on what a model says about the cells, so the test that
asks the shipped model to name them correctly can fail when the model or the
pre-processing gets worse (a model-chosen set holds only cells the model already gets
right).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classifier_data import CLASSES, DEFAULT_DATA, REPO

FIXTURES = REPO / "tests" / "fixtures" / "cells"


def pick(val_dir: Path, per_class: int) -> dict[str, list[Path]]:
    """The ``per_class`` files of each class with the smallest sha256 of their name."""
    chosen = {}
    for cls in CLASSES:
        files = sorted(
            (val_dir / cls).glob("*.jpg"),
            key=lambda p: hashlib.sha256(p.name.encode("utf-8")).hexdigest(),
        )
        chosen[cls] = files[:per_class]
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--per-class", type=int, default=3)
    p.add_argument("--out", type=Path, default=FIXTURES)
    args = p.parse_args(argv)
    for cls, files in pick(args.data / "pbc" / "val", args.per_class).items():
        folder = args.out / cls
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, folder / f.name)
            print(f"{cls}/{f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

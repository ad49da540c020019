"""Data sets of the white-cell classifier: PBC (train/val) and BCCD (cross-lab check only).

Training-time only. PBC images are decoded once into uint8 arrays in memory; BCCD white
cells are cut from their fields with the agent's own ``cells_in_field`` so the check
goes through the runtime's geometry.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from agent.vision.preprocess import cells_in_field, crop_centred

_log = logging.getLogger(__name__)

CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
WHITE_CELL_CLASSES = ("basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil")
BCCD_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
PBC_PIXEL_SIZE_UM = 0.2
BCCD_PIXEL_SIZE_UM = 7.5 / 105.0
"""BCCD fields: median red-cell box 105 px for a 7.5 um red cell (data README)."""
PBC_SIDE = 180
"""PBC images are mostly 181 x 180 px (a few 184 x 183 or 180 x 179): centre 180 x 180."""

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclass
class PbcSplit:
    images: npt.NDArray[np.uint8]
    """N x 180 x 180 x 3 RGB, cell centred, 0.2 um/px."""
    labels: npt.NDArray[np.int64]
    paths: list[str]


def load_pbc(root: Path, split: str) -> PbcSplit:
    """Decode one PBC split into memory (about 1 GB for train)."""
    rows = list(csv.DictReader((root / "pbc" / "labels.csv").open(encoding="utf-8")))
    rows = [r for r in rows if r["split"] == split]
    images = np.empty((len(rows), PBC_SIDE, PBC_SIDE, 3), np.uint8)
    labels = np.empty(len(rows), np.int64)
    paths = []
    for i, row in enumerate(rows):
        path = root / "pbc" / row["file"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"{path}: cannot read image")
        h, w = bgr.shape[:2]
        images[i] = crop_centred(bgr, (w / 2.0, h / 2.0), PBC_SIDE)[:, :, ::-1]
        labels[i] = CLASSES.index(row["class"])
        paths.append(str(path))
    _log.info("pbc %s: %d images", split, len(rows))
    return PbcSplit(images, labels, paths)


def centre_crop(images: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """The central ``size`` x ``size`` of N x H x W x 3 images (PBC is already at 0.2 um/px)."""
    h, w = images.shape[1:3]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(images[:, y0 : y0 + size, x0 : x0 + size])


@dataclass
class BccdCells:
    crops: npt.NDArray[np.uint8]
    """N x S x S x 3 RGB at the reference scale."""
    labels: list[str]
    files: list[str]
    skipped: dict[str, int]


@dataclass
class BccdField:
    file: str
    path: Path
    centres: list[tuple[float, float]]
    """Centres (x, y) of the field's WBC boxes, pixels of the full field."""
    label: str


def bccd_fields(root: Path) -> tuple[list[BccdField], dict[str, int]]:
    """BCCD fields whose boxed white cells all have a known subtype, and skip counts.

    A field's subtype names its white cells. Fields whose boxed white cells do not
    match their label one to one are skipped: no WBC box, one box but two subtypes,
    or two boxes with two different subtypes (which box is which is unknown). Two
    boxes with the same subtype twice keep both cells.
    """
    rows_by_file: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (root / "bccd" / "boxes.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows_by_file[row["file"]].append(row)
    fields = []
    skipped: dict[str, int] = defaultdict(int)
    for name in sorted(rows_by_file):
        rows = rows_by_file[name]
        subtypes = [s.strip() for s in rows[0]["wbc_subtype_of_field"].split(",") if s.strip()]
        wbcs = [r for r in rows if r["object"] == "WBC"]
        if not subtypes:
            skipped["no subtype"] += 1
        elif not wbcs:
            skipped["no WBC box"] += 1
        elif len(set(subtypes)) > 1:
            skipped["two different subtypes"] += 1
        elif len(subtypes) > 1 and len(wbcs) != len(subtypes):
            skipped["cell count differs from label"] += 1
        elif subtypes[0] not in BCCD_CLASSES:
            skipped[f"subtype {subtypes[0]}"] += 1
        else:
            centres = [
                (
                    (float(r["xmin"]) + float(r["xmax"])) / 2.0,
                    (float(r["ymin"]) + float(r["ymax"])) / 2.0,
                )
                for r in wbcs
            ]
            fields.append(BccdField(name, root / "bccd" / "fields" / name, centres, subtypes[0]))
    return fields, dict(skipped)


def bccd_white_cells(root: Path, crop_px: int, reference_um: float = 0.2) -> BccdCells:
    """Reference-scale RGB crops of the white cells of ``bccd_fields``."""
    fields, skipped = bccd_fields(root)
    crops, labels, files = [], [], []
    for field in fields:
        bgr = cv2.imread(str(field.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"{field.path}: cannot read field")
        for crop in cells_in_field(bgr, field.centres, BCCD_PIXEL_SIZE_UM, reference_um, crop_px):
            crops.append(crop[:, :, ::-1])
            labels.append(field.label)
            files.append(field.file)
    return BccdCells(np.stack(crops), labels, files, skipped)

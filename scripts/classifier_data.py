"""Data sets of the white-cell classifier: PBC and Raabin (train/val), BCCD and LISC
(cross-lab checks only, never trained on).

Training-time only. Single-cell images are decoded once into uint8 arrays in memory,
all padded or cropped to one side so the two training labs can share batches; BCCD and
LISC white cells are cut from their fields with the agent's own ``cells_in_field`` so
the checks go through the runtime's geometry.
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
FIVE_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
"""The white cells every lab labels (Raabin, BCCD, LISC): the cross-lab checks' classes."""
BCCD_CLASSES = FIVE_CLASSES
SOURCES = ("pbc", "raabin")
"""Labs the classifier may be trained on (BCCD and LISC are validation only)."""
PBC_PIXEL_SIZE_UM = 0.2
BCCD_PIXEL_SIZE_UM = 7.5 / 105.0
"""BCCD fields: median red-cell box 105 px for a 7.5 um red cell (data README)."""
PBC_SIDE = 180
"""PBC images are mostly 181 x 180 px (a few 184 x 183 or 180 x 179): centre 180 x 180."""

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclass
class CellSet:
    """Single-cell images of one or more labs, as the training script holds them."""

    images: npt.NDArray[np.uint8]
    """N x 180 x 180 x 3 RGB, cell centred, 0.2 um/px."""
    labels: npt.NDArray[np.int64]
    """Index into ``CLASSES``."""
    paths: list[str]
    sources: npt.NDArray[np.int64]
    """Index into ``SOURCES``: which lab each image comes from."""

    def subset(self, keep: npt.NDArray[np.int64]) -> CellSet:
        return CellSet(
            self.images[keep], self.labels[keep], [self.paths[i] for i in keep], self.sources[keep]
        )

    @staticmethod
    def concat(sets: list[CellSet]) -> CellSet:
        return CellSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.labels for s in sets]),
            [p for s in sets for p in s.paths],
            np.concatenate([s.sources for s in sets]),
        )


def _side(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The central PBC_SIDE square; smaller images (Raabin, 164 px) are mirrored out to it.

    Mirroring continues the red-cell background the way the augmentation's own
    reflection padding does, so neither lab's images carry a tell-tale border.
    """
    h, w = bgr.shape[:2]
    if h < PBC_SIDE or w < PBC_SIDE:
        py, px = max(0, PBC_SIDE - h), max(0, PBC_SIDE - w)
        bgr = cv2.copyMakeBorder(
            bgr, py // 2, py - py // 2, px // 2, px - px // 2, cv2.BORDER_REFLECT_101
        )
        h, w = bgr.shape[:2]
    return crop_centred(bgr, (w / 2.0, h / 2.0), PBC_SIDE)


def load_cells(root: Path, source: str, split: str) -> CellSet:
    """Decode one lab's split into memory (PBC train: about 1 GB, Raabin train 0.8 GB)."""
    rows = list(csv.DictReader((root / source / "labels.csv").open(encoding="utf-8")))
    rows = [r for r in rows if r["split"] == split]
    images = np.empty((len(rows), PBC_SIDE, PBC_SIDE, 3), np.uint8)
    labels = np.empty(len(rows), np.int64)
    paths = []
    for i, row in enumerate(rows):
        path = root / source / row["file"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"{path}: cannot read image")
        images[i] = _side(bgr)[:, :, ::-1]
        labels[i] = CLASSES.index(row["class"])
        paths.append(str(path))
    _log.info("%s %s: %d images", source, split, len(rows))
    return CellSet(images, labels, paths, np.full(len(rows), SOURCES.index(source), np.int64))


def load_pbc(root: Path, split: str) -> CellSet:
    return load_cells(root, "pbc", split)


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


@dataclass
class FieldCells:
    """Reference-scale white-cell crops cut from whole fields of a validation lab."""

    crops: npt.NDArray[np.uint8]
    """N x S x S x 3 RGB at the reference scale."""
    labels: list[str]
    files: list[str]


def read_boxes(path: Path) -> dict[str, list[tuple[tuple[float, float, float, float], str]]]:
    """A box CSV (``#`` comments; file, xmin, ymin, xmax, ymax, class): each field's white
    cells and don't-care regions (class ``ignore``), keyed by the field's path under
    ``lisc/``."""
    out: dict[str, list[tuple[tuple[float, float, float, float], str]]] = defaultdict(list)
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            box = (float(row["xmin"]), float(row["ymin"]), float(row["xmax"]), float(row["ymax"]))
            name = row["file"] if row["file"].startswith("fields/") else f"fields/{row['file']}"
            out[name].append((box, row["class"]))
    return dict(out)


IGNORE = "ignore"
"""A box CSV's don't-care region: a detection there is neither right nor wrong."""


def lisc_white_cells(root: Path, boxes_csv: Path, crop_px: int) -> FieldCells:
    """LISC white cells at the centres of their boxes (fields already at 0.2 um/px)."""
    crops, labels, files = [], [], []
    for name, cells in sorted(read_boxes(boxes_csv).items()):
        path = root / "lisc" / name
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"{path}: cannot read field")
        cells = [(b, c) for b, c in cells if c != IGNORE]
        centres = [((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0) for b, _ in cells]
        for crop, (_, cls) in zip(
            cells_in_field(bgr, centres, PBC_PIXEL_SIZE_UM, PBC_PIXEL_SIZE_UM, crop_px),
            cells,
            strict=True,
        ):
            crops.append(crop[:, :, ::-1])
            labels.append(cls)
            files.append(name)
    return FieldCells(np.stack(crops), labels, files)


@dataclass
class Checks:
    """Every validation set a run is scored on, loaded once (RGB crops at crop size)."""

    pbc_crops: npt.NDArray[np.uint8]
    pbc_labels: npt.NDArray[np.int64]
    raabin: FieldCells
    bccd: BccdCells
    lisc: FieldCells | None


def load_checks(root: Path, crop_px: int, lisc_boxes: Path) -> Checks:
    """PBC val, Raabin val, BCCD and (when its boxes exist) LISC, as crops."""
    pbc = load_cells(root, "pbc", "val")
    raabin = load_cells(root, "raabin", "val")
    lisc = None
    if lisc_boxes.exists():
        lisc = lisc_white_cells(root, lisc_boxes, crop_px)
    else:
        _log.warning("%s missing: no LISC check", lisc_boxes)
    return Checks(
        pbc_crops=centre_crop(pbc.images, crop_px),
        pbc_labels=pbc.labels,
        raabin=FieldCells(
            centre_crop(raabin.images, crop_px), [CLASSES[i] for i in raabin.labels], raabin.paths
        ),
        bccd=bccd_white_cells(root, crop_px),
        lisc=lisc,
    )

"""Training and validation fields for the white-cell detector, and their tiles.

Two sources of labelled whole fields:
- BCCD (real 640x480 photographs, ~0.071 um/px, from another lab and camera) with the
  box corrections of ``scripts/bccd_corrections.csv``, split into train/validation by
  a hash of the file name (deterministic, ~25% validation, never trained on);
- simulated fields from the virtual slide (``drivers.sim.slide``), see
  ``detector_sim.py``.

Training runs on small square tiles at the model's scale (0.4 um/px) cut from these
fields with scale, dihedral, colour/stain, blur, noise and JPEG augmentation.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

BCCD_PIXEL_SIZE_UM = 0.071
"""Median red-cell box of 105 px for a 7.5 um red cell (see the data README)."""
MODEL_PIXEL_SIZE_UM = 0.4
STRIDE = 4
PAD_VALUE = 128
"""Padding grey; the runtime pads with zeros after normalisation, i.e. with this value."""
NORM_MEAN = (0.5, 0.5, 0.5)
NORM_STD = (0.25, 0.25, 0.25)
CORRECTIONS = Path(__file__).resolve().parent / "bccd_corrections.csv"
VALIDATION_HASH_BELOW = 64
"""A field is in validation when the first byte of sha256(file name) is below this (~25%)."""
MIN_VISIBLE_FRACTION = 0.4
"""A box cut by a tile edge to less than this fraction of its area becomes don't-care."""


@dataclass
class LabelledField:
    """A whole field with the cells the detector must find and the don't-care regions."""

    name: str
    image: np.ndarray
    pixel_size_um: float
    boxes: np.ndarray
    """(N, 4) nucleated-cell boxes, field pixels."""
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    """(M, 4) don't-care regions, field pixels."""
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    """(K, 4) things that must not be reported (platelets), field pixels; for sampling."""
    source: str = "bccd"
    box_classes: list[str] = field(default_factory=list)
    """Class of each box when known (simulated fields), for per-class recall."""


def is_bccd_validation(file_name: str) -> bool:
    return hashlib.sha256(file_name.encode()).digest()[0] < VALIDATION_HASH_BELOW


def _box(row: dict[str, str], keys: Sequence[str]) -> list[float]:
    return [float(row[k]) for k in keys]


def load_bccd(data_dir: Path, split: str) -> list[LabelledField]:
    """BCCD fields of ``split`` ('train', 'val' or 'all') with the corrections applied."""
    rows = list(csv.DictReader((data_dir / "boxes.csv").open(encoding="utf-8")))
    wbc: dict[str, list[list[float]]] = defaultdict(list)
    platelets: dict[str, list[list[float]]] = defaultdict(list)
    ignore: dict[str, list[list[float]]] = defaultdict(list)
    files = sorted({r["file"] for r in rows})
    keys = ("xmin", "ymin", "xmax", "ymax")
    for r in rows:
        if r["object"] == "WBC":
            wbc[r["file"]].append(_box(r, keys))
        elif r["object"] == "Platelets":
            platelets[r["file"]].append(_box(r, keys))
    lines = [
        ln for ln in CORRECTIONS.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")
    ]
    for r in csv.DictReader(lines):
        box = _box(r, ("x0", "y0", "x1", "y1"))
        if r["action"] == "add_wbc":
            wbc[r["file"]].append(box)
        elif r["action"] == "ignore":
            ignore[r["file"]].append(box)
        else:
            raise ValueError(f"{CORRECTIONS}: unknown action {r['action']!r}")
    fields = []
    for name in files:
        if split != "all" and is_bccd_validation(name) != (split == "val"):
            continue
        image = cv2.imread(str(data_dir / "fields" / name), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read {data_dir / 'fields' / name}")
        fields.append(
            LabelledField(
                name=name,
                image=image,
                pixel_size_um=BCCD_PIXEL_SIZE_UM,
                boxes=np.asarray(wbc[name], dtype=np.float64).reshape(-1, 4),
                ignore=np.asarray(ignore[name], dtype=np.float64).reshape(-1, 4),
                negatives=np.asarray(platelets[name], dtype=np.float64).reshape(-1, 4),
                source="bccd",
            )
        )
    return fields


@dataclass
class Tile:
    image: np.ndarray
    """T x T x 3 uint8 BGR at the model's scale."""
    valid: np.ndarray
    """T x T bool: pixels that come from the field (the rest is padding)."""
    boxes: np.ndarray
    ignore: np.ndarray


def _transform_boxes(boxes: np.ndarray, ox: float, oy: float, fx: float, fy: float) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - ox) * fx
    out[:, [1, 3]] = (out[:, [1, 3]] - oy) * fy
    return out


def _clip(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], x0, x1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], y0, y1)
    return out


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def cut_tile(
    lf: LabelledField, rng: np.random.Generator, tile: int, scale_jitter: float, focus: float
) -> Tile:
    """A ``tile`` x ``tile`` window of ``lf`` at the model's scale (times a random jitter).

    With probability ``focus`` the window is placed around a random cell (or platelet:
    the negatives worth learning), else uniformly; windows may overhang the field, the
    overhang is padding.
    """
    jitter = math.exp(rng.uniform(-math.log(1 + scale_jitter), math.log(1 + scale_jitter)))
    factor = lf.pixel_size_um / MODEL_PIXEL_SIZE_UM * jitter
    height, width = lf.image.shape[:2]
    window = tile / factor
    targets = lf.boxes if rng.random() < 0.8 or len(lf.negatives) == 0 else lf.negatives
    if rng.random() < focus and len(targets):
        b = targets[rng.integers(len(targets))]
        cx = (b[0] + b[2]) / 2 + rng.uniform(-0.4, 0.4) * window
        cy = (b[1] + b[3]) / 2 + rng.uniform(-0.4, 0.4) * window
    else:
        cx = rng.uniform(0, width)
        cy = rng.uniform(0, height)
    if window >= width:
        cx = width / 2 + rng.uniform(-0.5, 0.5) * (window - width)
    if window >= height:
        cy = height / 2 + rng.uniform(-0.5, 0.5) * (window - height)
    ox, oy = cx - window / 2, cy - window / 2
    ix0, iy0 = max(0, math.floor(ox)), max(0, math.floor(oy))
    ix1, iy1 = min(width, math.ceil(ox + window)), min(height, math.ceil(oy + window))
    canvas = np.full((tile, tile, 3), PAD_VALUE, dtype=np.uint8)
    valid = np.zeros((tile, tile), dtype=bool)
    crop = lf.image[iy0:iy1, ix0:ix1]
    rw = max(1, round((ix1 - ix0) * factor))
    rh = max(1, round((iy1 - iy0) * factor))
    resized = cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA)
    fx, fy = rw / (ix1 - ix0), rh / (iy1 - iy0)
    px = round((ix0 - ox) * factor)
    py = round((iy0 - oy) * factor)
    x0, y0 = max(0, px), max(0, py)
    x1, y1 = min(tile, px + rw), min(tile, py + rh)
    canvas[y0:y1, x0:x1] = resized[y0 - py : y1 - py, x0 - px : x1 - px]
    valid[y0:y1, x0:x1] = True
    # Field pixel u maps to tile pixel (u - ix0) * f + p.
    boxes = _transform_boxes(lf.boxes, ix0 - px / fx, iy0 - py / fy, fx, fy)
    ignore = _transform_boxes(lf.ignore, ix0 - px / fx, iy0 - py / fy, fx, fy)
    clipped = _clip(boxes, x0, y0, x1, y1)
    full = _area(boxes)
    visible = np.where(full > 0, _area(clipped) / np.where(full > 0, full, 1), 0)
    keep = visible >= MIN_VISIBLE_FRACTION
    partial = (~keep) & (visible > 0)
    ignore = np.concatenate([_clip(ignore, x0, y0, x1, y1), clipped[partial]])
    ignore = ignore[_area(ignore) > 0]
    return Tile(image=canvas, valid=valid, boxes=clipped[keep], ignore=ignore)


def _dihedral(t: Tile, k: int, flip: bool) -> Tile:
    """Rotate by k * 90 degrees (counter-clockwise) then optionally mirror left-right."""
    image, valid, size = t.image, t.valid, t.image.shape[0]

    def rot(b: np.ndarray) -> np.ndarray:
        # np.rot90 (CCW): pixel (x, y) -> (y, size - x).
        return np.stack([b[:, 1], size - b[:, 2], b[:, 3], size - b[:, 0]], axis=1)

    boxes, ignore = t.boxes.reshape(-1, 4), t.ignore.reshape(-1, 4)
    for _ in range(k):
        image, valid = np.rot90(image), np.rot90(valid)
        boxes, ignore = rot(boxes), rot(ignore)
    if flip:
        image, valid = image[:, ::-1], valid[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1)
        ignore = np.stack(
            [size - ignore[:, 2], ignore[:, 1], size - ignore[:, 0], ignore[:, 3]], axis=1
        )
    return Tile(np.ascontiguousarray(image), np.ascontiguousarray(valid), boxes, ignore)


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain and device variation: hue, saturation, per-channel gain, gamma, contrast."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-10, 10)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    out *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(0.75, 1.35)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.75, 1.25) + mean + rng.uniform(-20, 20)
    return np.clip(out, 0, 255).astype(np.uint8)


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Focus, sensor noise and compression."""
    if rng.random() < 0.35:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.3))
    if rng.random() < 0.35:
        noise = rng.normal(0, rng.uniform(1, 7), image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image


def augmented_tile(
    lf: LabelledField, rng: np.random.Generator, tile: int = 128, focus: float = 0.7
) -> Tile:
    t = cut_tile(lf, rng, tile, scale_jitter=0.15, focus=focus)
    t = _dihedral(t, int(rng.integers(4)), bool(rng.integers(2)))
    image = t.image
    if rng.random() < 0.9:
        image = _colour(image, rng)
    image = _degrade(image, rng)
    image = np.where(t.valid[..., None], image, np.uint8(PAD_VALUE)).astype(np.uint8)
    return Tile(image, t.valid, t.boxes, t.ignore)


@dataclass
class Targets:
    heatmap: np.ndarray
    """(h, w) float32 Gaussian centre targets, 1 at each centre cell."""
    heatmap_weight: np.ndarray
    """(h, w) float32: 0 on padding and don't-care regions."""
    regression: np.ndarray
    """(4, h, w) float32: centre offset in cells (x, y), log width, log height (model px)."""
    regression_weight: np.ndarray
    """(h, w) float32: 1 where the regression is supervised (3x3 cells around each centre)."""


def encode_targets(t: Tile, stride: int = STRIDE) -> Targets:
    size = t.image.shape[0]
    h = w = size // stride
    heatmap = np.zeros((h, w), np.float32)
    weight = t.valid[stride // 2 :: stride, stride // 2 :: stride].astype(np.float32)[:h, :w]
    reg = np.zeros((4, h, w), np.float32)
    reg_w = np.zeros((h, w), np.float32)
    reg_dist = np.full((h, w), np.inf, np.float32)
    for b in t.ignore:
        gx0, gy0 = math.floor(b[0] / stride), math.floor(b[1] / stride)
        gx1, gy1 = math.ceil(b[2] / stride), math.ceil(b[3] / stride)
        weight[max(0, gy0) : max(0, gy1), max(0, gx0) : max(0, gx1)] = 0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for b in t.boxes:
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw < 2 or bh < 2:
            continue
        cx, cy = (b[0] + b[2]) / 2 / stride, (b[1] + b[3]) / 2 / stride
        sigma = max(0.75, 0.1 * math.sqrt(bw * bh) / stride)
        ix, iy = min(w - 1, int(cx)), min(h - 1, int(cy))
        g = np.exp(-((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) / (2 * sigma**2))
        heatmap = np.maximum(heatmap, g)
        heatmap[iy, ix] = 1.0
        # A centre inside a don't-care region must still be learned.
        r = max(1, math.ceil(2 * sigma))
        weight[max(0, iy - r) : iy + r + 1, max(0, ix - r) : ix + r + 1] = np.maximum(
            weight[max(0, iy - r) : iy + r + 1, max(0, ix - r) : ix + r + 1],
            t.valid[min(size - 1, int(cy * stride)), min(size - 1, int(cx * stride))],
        )
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                jx, jy = ix + dx, iy + dy
                if not (0 <= jx < w and 0 <= jy < h):
                    continue
                d = (jx + 0.5 - cx) ** 2 + (jy + 0.5 - cy) ** 2
                if d >= reg_dist[jy, jx]:
                    continue
                reg_dist[jy, jx] = d
                reg[:, jy, jx] = (cx - jx, cy - jy, math.log(bw), math.log(bh))
                reg_w[jy, jx] = 1.0 if (dx, dy) == (0, 0) else 0.5
    return Targets(heatmap, weight, reg, reg_w)

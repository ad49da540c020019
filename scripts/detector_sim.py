"""Simulated fields for the detector: the virtual slide through the virtual camera.

Each field is a 2028x1520 capture at 0.2 um/px of a virtual slide
(``drivers.sim.slide.VirtualSlide``) made of PBC cells, photographed by the virtual
camera (``drivers.sim.camera_model.VirtualCamera``: slight defocus, vignetting, shot and
read noise, random exposure), with its ground truth: every object overlapping the field,
boxed by the drawn cut-out's extent (alpha >= 0.5) and clipped to the field.

Training fields use slides built from ``pbc/train`` and validation fields slides built
from ``pbc/val`` (cells never seen in training), with different seeds. Fields are cached
as PNG + JSON under the work directory (outside the repository).

Labels: white cells and nucleated red cells (erythroblasts) are cells to find in training;
platelets (clumps) are negatives. In validation, erythroblasts are don't-care (neither
required nor penalised) so the numbers are white-cell recall and precision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from detector_data import LabelledField

from drivers.camera.base import CameraSettings
from drivers.sim.camera_model import ManualStage, VirtualCamera
from drivers.sim.config import SimulatorConfig
from drivers.sim.slide import REFERENCE_PIXEL_UM, CellTruth, VirtualSlide
from drivers.sim.smear import Rect

FIELD_W, FIELD_H = 2028, 1520
FIELDS_PER_SLIDE = 4
MIN_VISIBLE_FRACTION = 0.4
"""A cell cut by the field edge to less than this fraction of its box is don't-care."""
CACHE_VERSION = 3
TRAIN_SEED, TRAIN_FIELDS, TRAIN_RBC_PER_WBC = 1000, 48, 150.0
VAL_SEED, VAL_FIELDS, VAL_RBC_PER_WBC = 9000, 12, 250.0
"""Validation slides: other seeds, pbc/val cells, a density closer to a real smear's."""
DEFAULT_CACHE = Path("/tmp/algocyte-detector/sim-cache")


def available() -> bool:
    return True


def _footprint_px(slide: VirtualSlide, cell: CellTruth) -> tuple[int, int, int, int]:
    """The drawn cell's extent in slide pixels (x0, y0, x1, y1, exclusive ends).

    Uses the slide's own placed cut-out (rotated, flipped, scaled) so the box is the
    cell as drawn, not the class's nominal radius.
    """
    placed = slide._placed_sprite(cell)
    half = placed.od.shape[0] // 2
    ys, xs = np.nonzero(placed.alpha >= 0.5)
    cx = math.floor(cell.x_um / REFERENCE_PIXEL_UM) - half
    cy = math.floor(cell.y_um / REFERENCE_PIXEL_UM) - half
    if len(xs) == 0:
        r = round(cell.radius_um / REFERENCE_PIXEL_UM)
        return cx + half - r, cy + half - r, cx + half + r, cy + half + r
    return cx + int(xs.min()), cy + int(ys.min()), cx + int(xs.max()) + 1, cy + int(ys.max()) + 1


def _field_truth(
    slide: VirtualSlide, x_um: float, y_um: float, for_training: bool
) -> dict[str, list]:
    gx0, gy0 = slide.pixel_origin(x_um, y_um, FIELD_W, FIELD_H)
    ps = REFERENCE_PIXEL_UM
    margin = 15.0
    rect = Rect(
        gx0 * ps - margin,
        gy0 * ps - margin,
        (gx0 + FIELD_W) * ps + margin,
        (gy0 + FIELD_H) * ps + margin,
    )
    out: dict[str, list] = {"boxes": [], "classes": [], "ignore": [], "negatives": []}
    for cell in slide.cells_in(rect):
        x0, y0, x1, y1 = _footprint_px(slide, cell)
        full = [x0 - gx0, y0 - gy0, x1 - gx0, y1 - gy0]
        clipped = [
            min(max(full[0], 0), FIELD_W),
            min(max(full[1], 0), FIELD_H),
            min(max(full[2], 0), FIELD_W),
            min(max(full[3], 0), FIELD_H),
        ]
        area = (full[2] - full[0]) * (full[3] - full[1])
        visible = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        if visible <= 0:
            continue
        box = [float(v) for v in clipped]
        if cell.cls == "platelet":
            out["negatives"].append(box)
        elif visible < MIN_VISIBLE_FRACTION * area:
            out["ignore"].append(box)
        elif cell.is_white or for_training:
            out["boxes"].append(box)
            out["classes"].append(cell.cls)
        else:
            out["ignore"].append(box)  # erythroblasts: don't-care in validation
    return out


def _render_slide_fields(
    library: Path | None,
    seed: int,
    rbc_per_wbc: float,
    for_training: bool,
    count: int,
    class_mix: dict[str, float] | None,
    tag: str,
) -> list[tuple[np.ndarray, dict[str, list], str]]:
    config = SimulatorConfig(seed=seed, cell_library=library, rbc_per_wbc=rbc_per_wbc)
    if class_mix is not None:
        config = config.model_copy(update={"class_mix": class_mix})
    slide = VirtualSlide(config)
    stage = ManualStage(led_level=700)
    camera = VirtualCamera(slide, stage, config.optics, width=FIELD_W, height=FIELD_H)
    rng = np.random.default_rng([seed, 0xDE7])
    mono = slide.monolayer_bounds()
    extent = slide.smear_extent()
    out = []
    for k in range(count):
        # Mostly the reading zone; now and then the thick or thin parts of the smear.
        area = mono if rng.random() < 0.8 else extent
        x = float(rng.uniform(area.x0 + 500, area.x1 - 500))
        y = float(rng.uniform(area.y0 + 500, area.y1 - 500))
        z = camera.best_focus_z(x, y) + float(rng.uniform(-1.2, 1.2))
        glass_level = float(rng.uniform(170, 240))
        exposure = glass_level / (config.optics.brightness_dn_per_ms * 0.7) * 1000.0
        camera.configure(CameraSettings(FIELD_W, FIELD_H, exposure_us=round(exposure)))
        stage.move_to(x, y, z)
        frame = camera.capture()
        truth = _field_truth(slide, x, y, for_training)
        out.append((frame.image, truth, f"sim{tag}-s{seed}-f{k}"))
    camera.close()
    return out


def load_fields(
    cache: Path,
    n: int,
    seed_base: int,
    library: Path | None,
    rbc_per_wbc: float,
    for_training: bool,
    class_mix: dict[str, float] | None = None,
    tag: str = "",
) -> list[LabelledField]:
    """``n`` labelled fields from slides ``seed_base``, ``seed_base + 1``, ... (cached).

    ``library`` None is the demo library shipped with the agent; ``class_mix`` None the
    simulator's default mix; ``tag`` names a set with a non-default mix or library.
    """
    cache.mkdir(parents=True, exist_ok=True)
    fields: list[LabelledField] = []
    seed = seed_base
    while len(fields) < n:
        count = min(FIELDS_PER_SLIDE, n - len(fields))
        lib = library.name if library is not None else "demo"
        stem = f"v{CACHE_VERSION}{tag}-{lib}-{seed}-{rbc_per_wbc:g}-{int(for_training)}"
        meta_path = cache / f"{stem}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            rendered = [
                (cv2.imread(str(cache / m["image"]), cv2.IMREAD_COLOR), m["truth"], m["name"])
                for m in meta[:count]
            ]
        else:
            rendered = _render_slide_fields(
                library, seed, rbc_per_wbc, for_training, count, class_mix, tag
            )
            meta = []
            for image, truth, name in rendered:
                cv2.imwrite(str(cache / f"{name}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                meta.append({"image": f"{name}.png", "truth": truth, "name": name})
            meta_path.write_text(json.dumps(meta))
        for image, truth, name in rendered:
            fields.append(
                LabelledField(
                    name=name,
                    image=image,
                    pixel_size_um=REFERENCE_PIXEL_UM,
                    boxes=np.asarray(truth["boxes"], dtype=np.float64).reshape(-1, 4),
                    ignore=np.asarray(truth["ignore"], dtype=np.float64).reshape(-1, 4),
                    negatives=np.asarray(truth["negatives"], dtype=np.float64).reshape(-1, 4),
                    source="sim",
                    box_classes=list(truth["classes"]),
                )
            )
        seed += 1
    return fields


def describe(n_train: int, n_val: int, rbc_train: float, rbc_val: float) -> str:
    return (
        f"{n_train} simulated 2028x1520 fields (virtual slide of pbc/train cells, "
        f"{rbc_train:g} red cells per white cell, virtual camera); validation: {n_val} fields "
        f"of slides of pbc/val cells ({rbc_val:g} red cells per white cell)"
    )


def validation_fields(data: Path, cache: Path = DEFAULT_CACHE) -> list[LabelledField]:
    """The fixed simulated validation set (rendered once, then read from the cache)."""
    return load_fields(cache, VAL_FIELDS, VAL_SEED, data / "pbc" / "val", VAL_RBC_PER_WBC, False)


WHITE_CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "ig")


def balanced_fields(data: Path, cache: Path = DEFAULT_CACHE) -> list[LabelledField]:
    """Validation slides (pbc/val) with every white-cell class equally common, so the rare
    classes (eosinophils, basophils, IGs) get a recall of their own."""
    mix = dict.fromkeys(WHITE_CLASSES, 1.0) | {"erythroblast": 10.0, "platelet": 10.0}
    return load_fields(cache, 12, 9100, data / "pbc" / "val", VAL_RBC_PER_WBC, False, mix, "-bal")


def demo_fields(cache: Path = DEFAULT_CACHE) -> list[LabelledField]:
    """Slides as ``make run`` builds them: the shipped demo library, the default mix and density."""
    return load_fields(cache, 12, 9200, None, 700.0, False, None, "-demo")

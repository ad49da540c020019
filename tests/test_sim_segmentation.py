"""Cutting the centred cell out of a library image: the whole cell, none of the red cells."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from drivers.sim.cell_library import DEMO_LIBRARY, CellLibrary
from drivers.sim.red_cells import RIM_OD_BGR, render_red_cell
from drivers.sim.segmentation import SegmentationFailed, segment_cell

GLASS = np.array([205.0, 230.0, 250.0], dtype=np.float32)
SIZE = 181


def _paint(od: np.ndarray) -> np.ndarray:
    return np.clip(GLASS * 10.0 ** (-od), 0, 255).astype(np.uint8)


def _add_disc(od: np.ndarray, cx: float, cy: float, r: float, colour: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : od.shape[0], 0 : od.shape[1]]
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)
    disc = cv2.GaussianBlur(disc, (0, 0), 0.8)
    return od * (1 - disc[..., None]) + disc[..., None] * colour


def _add_red_cell(od: np.ndarray, cx: int, cy: int) -> None:
    sprite = render_red_cell(37.5, 1.0, 0.0, 0.9, 1.0)
    h = sprite.shape[0] // 2
    y0, x0 = cy - h, cx - h
    ys, xs = (
        slice(max(0, y0), min(SIZE, y0 + sprite.shape[0])),
        slice(max(0, x0), min(SIZE, x0 + sprite.shape[1])),
    )
    od[ys, xs] += sprite[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def synthetic_cell(cytoplasm_od: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A cell (dark nucleus in a pale cytoplasm, radius 30 px) ringed by touching red cells."""
    od = np.zeros((SIZE, SIZE, 3), np.float32)
    c = SIZE // 2
    for angle in np.linspace(0.3, 0.3 + 2 * np.pi, 6, endpoint=False):
        _add_red_cell(od, int(c + 49 * np.cos(angle)), int(c + 49 * np.sin(angle)))
    od = _add_disc(od, c, c, 30, np.array(cytoplasm_od, np.float32))
    od = _add_disc(od, c - 4, c + 2, 15, np.array([0.55, 1.1, 0.75], np.float32))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    truth = ((xx - c) ** 2 + (yy - c) ** 2 <= 30 * 30).astype(np.uint8)
    return _paint(od), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(
    "cytoplasm",
    [
        pytest.param((0.08, 0.10, 0.14), id="pale-blue-lymphocyte-like"),
        pytest.param(tuple(0.45 * RIM_OD_BGR), id="red-cell-coloured-neutrophil-like"),
        pytest.param((0.16, 0.30, 0.12), id="eosinophil-like-granules"),
    ],
)
def test_synthetic_cell_is_cut_from_touching_red_cells(
    cytoplasm: tuple[float, float, float],
) -> None:
    image, truth = synthetic_cell(cytoplasm)
    mask = segment_cell(image).mask
    assert iou(mask.astype(bool), truth.astype(bool)) > 0.85
    # None of the red cells (whose centres are 49 px out) is kept.
    c = SIZE // 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    assert mask[(xx - c) ** 2 + (yy - c) ** 2 > 38**2].sum() < 30


def test_image_of_red_cells_only_is_refused() -> None:
    od = np.zeros((SIZE, SIZE, 3), np.float32)
    for cx in range(20, SIZE, 40):
        for cy in range(20, SIZE, 40):
            _add_red_cell(od, cx, cy)
    with pytest.raises(SegmentationFailed):
        segment_cell(_paint(od))


def test_blank_glass_is_refused() -> None:
    with pytest.raises(SegmentationFailed):
        segment_cell(np.full((SIZE, SIZE, 3), 230, np.uint8))


@pytest.fixture(scope="module")
def library() -> CellLibrary:
    return CellLibrary(DEMO_LIBRARY)


@pytest.mark.parametrize(
    ("cls", "min_um", "max_um"),
    [
        ("neutrophil", 9.0, 16.0),
        ("eosinophil", 9.0, 17.0),
        ("lymphocyte", 6.0, 15.0),
        ("monocyte", 10.0, 22.0),
        ("basophil", 8.0, 16.0),
        ("platelet", 1.5, 8.0),
    ],
)
def test_library_cells_have_the_size_of_their_class(
    library: CellLibrary, cls: str, min_um: float, max_um: float
) -> None:
    """Equivalent diameters at 0.2 um/px: a kept red cell or a lost cytoplasm would show."""
    diameters = []
    for path in library.files(cls)[:12]:
        image = cv2.imread(str(path))
        cut = segment_cell(image)
        diameters.append(2 * np.sqrt(cut.mask.sum() / np.pi) * 0.2)
        # The cell is centred in its picture and the cut stays well inside it.
        h, w = cut.mask.shape
        ys, xs = np.nonzero(cut.mask)
        assert abs(xs.mean() - w / 2) < 0.2 * w and abs(ys.mean() - h / 2) < 0.2 * h
        assert cut.nucleus.sum() < cut.mask.sum()
    assert min_um < float(np.median(diameters)) < max_um, diameters


def test_neutrophil_cut_keeps_pale_cytoplasm(library: CellLibrary) -> None:
    ratios = []
    for path in library.files("neutrophil")[:12]:
        cut = segment_cell(cv2.imread(str(path)))
        ratios.append(cut.mask.sum() / max(cut.nucleus.sum(), 1))
    # A neutrophil's nucleus covers well under half of the cell.
    assert float(np.median(ratios)) > 2.0, ratios

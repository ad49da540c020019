"""The reviewer's pictures are written into the sample folder, readable, and of the expected size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.report.pictures import (
    CAPTION_PX,
    GALLERY_COLUMNS,
    LEGEND_PX,
    LEGEND_ROW_PX,
    MAP_MARGIN_PX,
    MAP_PX,
    PAD_PX,
    TILE_PX,
    TITLE_PX,
    GalleryCell,
    MapCell,
    crop_cell,
    gallery,
    scan_map,
)
from agent.report.service import ReportService
from tests.report_fixtures import Clock, differential_labels, geometry, make_config, run_sample

COUNTS = {"neutrophil": 23, "lymphocyte": 11, "eosinophil": 1, "unidentified": 2}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ReportService]:
    svc = ReportService(make_config(tmp_path), clock=Clock())
    yield svc
    svc.close()


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable image"
    return image


def test_finished_sample_has_a_gallery_per_class_and_a_scan_map(
    tmp_path: Path, service: ReportService
) -> None:
    run_sample(service, "S-1", differential_labels(COUNTS), per_field=24)
    folder = tmp_path / "samples" / "S-1"
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == [
        "gallery-eosinophil.png",
        "gallery-lymphocyte.png",
        "gallery-neutrophil.png",
        "gallery-unidentified.png",
        "scan-map.png",
    ]
    # 23 neutrophils: 10 per row, 3 rows.
    neutrophils = read(folder / "gallery-neutrophil.png")
    width = PAD_PX + GALLERY_COLUMNS * (TILE_PX + PAD_PX)
    height = TITLE_PX + PAD_PX + 3 * (TILE_PX + CAPTION_PX + PAD_PX)
    assert neutrophils.shape == (height, width, 3)
    # One eosinophil: one tile, but wide enough for the title.
    assert read(folder / "gallery-eosinophil.png").shape[0] == TITLE_PX + PAD_PX + (
        TILE_PX + CAPTION_PX + PAD_PX
    )

    # Two fields 160 x 120 um, 200 um apart: the slide area is 360 x 120 um, so the map
    # is MAP_PX wide and a third of that high, plus margins, title and the legend.
    scan = read(folder / "scan-map.png")
    map_w, map_h = MAP_PX, round(120 * MAP_PX / 360)
    assert scan.shape == (
        max(TITLE_PX + map_h + 2 * MAP_MARGIN_PX, TITLE_PX + 2 * MAP_MARGIN_PX + 7 * LEGEND_ROW_PX),
        map_w + 2 * MAP_MARGIN_PX + LEGEND_PX,
        3,
    )


def test_gallery_follows_reclassification(tmp_path: Path, service: ReportService) -> None:
    run_sample(service, "S-1", differential_labels(COUNTS))
    folder = tmp_path / "samples" / "S-1"
    eosinophil = next(c for c in service.store.cells("S-1") if c.label == "eosinophil")
    service.reclassify("S-1", eosinophil.cell_id, "basophil", "Dr. Ada")
    names = {p.name for p in folder.glob("gallery-*.png")}
    assert "gallery-eosinophil.png" not in names and "gallery-basophil.png" in names
    used = service.store.sample("S-1").bytes
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert used == on_disk


def test_scan_map_draws_fields_and_coloured_cells() -> None:
    fields = [geometry(0, 0.0, 0.0), geometry(1, 140.0, 0.0)]
    cells = [MapCell(0.0, 0.0, "neutrophil"), MapCell(140.0, 0.0, "eosinophil")]
    image = scan_map(fields, cells, "test")
    # Slide area x -80..220 um (300 um) -> 1000 px; the cell at x=0 sits 80 um in.
    scale = MAP_PX / 300.0
    px = (MAP_MARGIN_PX + round(80 * scale), TITLE_PX + MAP_MARGIN_PX + round(60 * scale))
    assert tuple(int(v) for v in image[px[1], px[0]]) == (180, 119, 31)  # neutrophil blue
    px2 = (MAP_MARGIN_PX + round(220 * scale), px[1])
    assert tuple(int(v) for v in image[px2[1], px2[0]]) == (40, 39, 214)  # eosinophil red


def test_gallery_title_says_when_cells_are_left_out() -> None:
    crop = np.zeros((30, 20, 3), np.uint8)
    image = gallery("neutrophil", [GalleryCell(i, 0.5, crop) for i in range(3)], total=50)
    assert image.shape[1] == 360  # minimum width for the title
    # The crop is letterboxed on white inside its tile.
    x, y = PAD_PX, TITLE_PX + PAD_PX
    assert tuple(int(v) for v in image[y + TILE_PX // 2, x + 2]) == (255, 255, 255)
    assert tuple(int(v) for v in image[y + TILE_PX // 2, x + TILE_PX // 2]) == (0, 0, 0)


def test_crop_stays_inside_the_image() -> None:
    image = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3).astype(np.uint8)
    crop = crop_cell(image, (70.0, 90.0, 80.0, 100.0), margin=0.5)
    assert crop.shape == (15, 15, 3)
    assert np.array_equal(crop, image[85:100, 65:80])

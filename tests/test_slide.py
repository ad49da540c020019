"""The virtual slide: deterministic, lazily tiled, with ground truth that matches its pixels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.cell_library import DEMO_LIBRARY, CellLibrary, CellLibraryError
from drivers.sim.config import SimulatorConfig, SmearConfig
from drivers.sim.slide import REFERENCE_PIXEL_UM, VirtualSlide
from drivers.sim.smear import Rect
from tests.sim_helpers import dark_mask, expected_pixel, field_rect, nucleus_pixels

PS = REFERENCE_PIXEL_UM
W, H = 1024, 768
PBC_VAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pbc" / "val"


@pytest.fixture(scope="module")
def library() -> CellLibrary:
    return CellLibrary(DEMO_LIBRARY)


def make_slide(library: CellLibrary, **kwargs: object) -> VirtualSlide:
    return VirtualSlide(SimulatorConfig(**kwargs), library)  # type: ignore[arg-type]


def test_same_seed_same_slide_in_any_order(library: CellLibrary) -> None:
    a = make_slide(library, seed=7)
    b = make_slide(library, seed=7)
    # b renders a neighbouring region first, so its tiles are generated in another order.
    b.render(31_000, 12_000, W, H)
    img_a = a.render(30_500, 12_200, W, H)
    img_b = b.render(30_500, 12_200, W, H)
    assert np.array_equal(img_a, img_b)
    rect = Rect(29_000, 11_000, 33_000, 14_000)
    assert a.cells_in(rect) == b.cells_in(rect)
    c = make_slide(library, seed=8)
    assert not np.array_equal(img_a, c.render(30_500, 12_200, W, H))
    assert a.cells_in(rect) != c.cells_in(rect)


def test_white_cell_density_follows_rbc_per_wbc(library: CellLibrary) -> None:
    slide = make_slide(library, seed=3, rbc_per_wbc=200.0)
    core = slide.monolayer_core()
    x0, y0 = core.x0 + 1000, core.y0 + 1000
    rect = Rect(x0, y0, x0 + 2000, y0 + 2000)
    red = slide.red_cell_count(rect)
    white = len(slide.cells_in(rect, white_only=True))
    assert red > 50_000
    # Poisson counts around red / 200; a few objects are dropped where two would overlap.
    expected = red / 200.0
    assert 0.8 * expected < white < 1.1 * expected, (red, white)


def test_class_mix_is_respected(library: CellLibrary) -> None:
    mix = {"neutrophil": 50.0, "lymphocyte": 50.0, "platelet": 100.0}
    slide = make_slide(library, seed=4, rbc_per_wbc=40.0, class_mix=mix)
    core = slide.monolayer_core()
    cells = slide.cells_in(Rect(core.x0, core.y0, core.x0 + 1500, core.y0 + 1500))
    counts = Counter(c.cls for c in cells)
    assert set(counts) == {"neutrophil", "lymphocyte", "platelet"}
    white = counts["neutrophil"] + counts["lymphocyte"]
    assert white > 300
    assert abs(counts["neutrophil"] / white - 0.5) < 0.08
    # Platelets: 100 per 100 white cells, and not counted as white.
    assert 0.75 < counts["platelet"] / white < 1.25
    assert all(c.is_white == (c.cls != "platelet") for c in cells)


def test_class_missing_from_library_is_a_clear_error(library: CellLibrary) -> None:
    with pytest.raises(CellLibraryError, match="band"):
        make_slide(library, class_mix={"neutrophil": 90.0, "band": 10.0})


def test_zones_thick_monolayer_thin_glass(library: CellLibrary) -> None:
    slide = make_slide(library, seed=1)
    smear = slide.config.smear
    yc = (smear.y_min_um + smear.y_max_um) / 2
    points = {
        "thick": (smear.x_start_um + 2000, yc),
        "monolayer": ((smear.thick_end_um + smear.monolayer_end_um) / 2, yc),
        "thin": ((smear.monolayer_end_um + smear.feather_end_um) / 2, yc),
        "glass": (smear.feather_end_um + 3000, yc),
    }
    dark = {}
    for zone, (x, y) in points.items():
        assert slide.zone_at(x, y) == zone
        img = slide.render(x, y, W, H)
        # Share of pixels clearly darker than glass in green (cells cover them).
        dark[zone] = float((img[..., 1] < 0.85 * 255).mean())
    assert dark["thick"] > 0.8
    assert 0.3 < dark["monolayer"] < 0.75
    assert 0.0 < dark["thin"] < dark["monolayer"]
    assert dark["glass"] == 0.0
    gx, gy = points["glass"]
    assert slide.cells_in(field_rect(gx, gy, W, H, PS)) == []


def test_feathered_edge_is_curved(library: CellLibrary) -> None:
    smear = SmearConfig()
    slide = make_slide(library, smear=smear)
    yc = (smear.y_min_um + smear.y_max_um) / 2
    x = smear.monolayer_end_um - smear.edge_recess_um / 2
    assert slide.zone_at(x, yc) == "monolayer"
    assert slide.zone_at(x, smear.y_min_um + 100) == "thin"


def test_truth_matches_pixels(library: CellLibrary) -> None:
    """Every white cell listed in a field is a dark nucleus at its pixel; elsewhere there is none."""
    slide = make_slide(library, seed=11, rbc_per_wbc=40.0)
    core = slide.monolayer_core()
    x, y = core.centre
    img = slide.render(x, y, W, H)
    glass_green = 255.0
    cells = slide.cells_in(field_rect(x, y, W, H, PS), white_only=True)
    inner = [
        c
        for c in cells
        if 40 < expected_pixel(c, x, y, W, H, PS)[0] < W - 40
        and 40 < expected_pixel(c, x, y, W, H, PS)[1] < H - 40
    ]
    assert len(inner) >= 5
    for cell in inner:
        px, py = expected_pixel(cell, x, y, W, H, PS)
        found = nucleus_pixels(img, px, py, cell.radius_um / PS, glass_green)
        assert found > 60, (cell, found)
    # Away from every object (white or not, inside the field or just outside it), nothing
    # is as dark as a nucleus.
    around = slide.cells_in(field_rect(x, y, W + 200, H + 200, PS))
    dark = dark_mask(img, glass_green)
    yy, xx = np.mgrid[0:H, 0:W]
    for cell in around:
        px, py = expected_pixel(cell, x, y, W, H, PS)
        dark &= (xx - px) ** 2 + (yy - py) ** 2 > (1.8 * cell.radius_um / PS) ** 2
    assert dark.sum() < 20


def test_cells_in_uses_centres(library: CellLibrary) -> None:
    slide = make_slide(library, seed=2, rbc_per_wbc=100.0)
    core = slide.monolayer_core()
    rect = Rect(core.x0, core.y0, core.x0 + 800, core.y0 + 800)
    cells = slide.cells_in(rect)
    assert cells
    assert all(rect.contains(c.x_um, c.y_um) for c in cells)
    halves = slide.cells_in(Rect(rect.x0, rect.y0, rect.x0 + 400, rect.y1)) + slide.cells_in(
        Rect(rect.x0 + 400, rect.y0, rect.x1, rect.y1)
    )
    assert sorted(c.id for c in halves) == sorted(c.id for c in cells)
    assert len({c.id for c in cells}) == len(cells)


def test_source_of_names_a_library_file(library: CellLibrary) -> None:
    slide = make_slide(library, seed=5, rbc_per_wbc=100.0)
    core = slide.monolayer_core()
    cell = slide.cells_in(Rect(core.x0, core.y0, core.x0 + 1000, core.y0 + 1000))[0]
    source = slide.source_of(cell)
    assert source.parent.name == cell.cls
    assert source.parent.parent == DEMO_LIBRARY


@pytest.mark.skipif(not PBC_VAL.is_dir(), reason="the PBC validation split is not on this machine")
def test_any_library_directory_works() -> None:
    slide = VirtualSlide(SimulatorConfig(cell_library=PBC_VAL, rbc_per_wbc=100.0, seed=9))
    core = slide.monolayer_core()
    x, y = core.centre
    img = slide.render(x, y, W, H)
    cells = slide.cells_in(field_rect(x, y, W, H, PS), white_only=True)
    assert cells
    assert all(slide.source_of(c).is_relative_to(PBC_VAL) for c in cells)
    assert dark_mask(img, 255.0).sum() > 100

"""The field scanner end to end on the simulated analyzer (real GRBL driver over a pty).

What the scanner hands out must be where it says: every true white cell inside a
field's slide rectangle is a nucleus at the pixel ``FieldImage.to_pixel`` gives. And
the scan overlaps capture with analysis, stops on the target, on a cancel, and on a
hardware fault with what it had scanned so far.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from agent.acquisition.cancel import CancelToken
from agent.acquisition.errors import ScanCancelled, ScanError
from agent.acquisition.field import FieldImage
from agent.acquisition.rig import Rig
from agent.acquisition.scanner import Scanner
from drivers.sim.smear import Rect
from tests.acquisition_sim import SimRig, quick_config, sim_rig

# A scan on the virtual slide: homing, survey and a dozen fields (10-30 s each test).
pytestmark = pytest.mark.slow

MARGIN_PX = 30
NUCLEUS_GREEN = 0.33
"""Nuclear chromatin transmits less green than this share of the glass level, even in the
palest demo neutrophil; two overlapping red cells transmit about 0.4."""


def _nucleus_pixels(image: np.ndarray, px: float, py: float, radius_px: float) -> int:
    """Dark, bluish (nucleus-coloured) pixels within ``radius_px`` of (px, py)."""
    glass = float(np.percentile(image[..., 1], 99.5))
    h, w = image.shape[:2]
    x0, x1 = max(0, int(px - radius_px)), min(w, int(px + radius_px) + 1)
    y0, y1 = max(0, int(py - radius_px)), min(h, int(py + radius_px) + 1)
    if x0 >= x1 or y0 >= y1:
        return 0
    patch = image[y0:y1, x0:x1].astype(np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx - px) ** 2 + (yy - py) ** 2 <= radius_px**2
    b, g = patch[..., 0], patch[..., 1]
    return int(((g < NUCLEUS_GREEN * glass) & (b > g) & inside).sum())


@pytest.fixture(scope="module")
def dense() -> Iterator[SimRig]:
    """A slide dense in white cells, so the target is reached in a few fields."""
    with sim_rig(17, rbc_per_wbc=60.0) as rig:
        yield rig


def _scanner(rig: SimRig, **overrides: object) -> Scanner:
    return Scanner(
        rig.stage,
        rig.camera,
        quick_config(**overrides),
        rig.camera_config,
        rig.stage_config.limits,
    )


def _white_cells(rig: SimRig, field: FieldImage) -> list[tuple[float, float, float]]:
    """(px, py, radius_px) of the true white cells well inside ``field``."""
    x0, y0, x1, y1 = field.slide_bounds()
    h, w = field.image.shape[:2]
    out = []
    for cell in rig.analyzer.slide.cells_in(Rect(x0, y0, x1, y1), white_only=True):
        px, py = field.to_pixel(cell.x_um, cell.y_um)
        if MARGIN_PX < px < w - MARGIN_PX and MARGIN_PX < py < h - MARGIN_PX:
            out.append((px, py, cell.radius_um / field.pixel_size_um))
    return out


def test_fields_show_the_true_cells_where_their_coordinates_say(dense: SimRig) -> None:
    fields: list[FieldImage] = []

    def analyse(field: FieldImage) -> int:
        fields.append(field)
        x0, y0, x1, y1 = field.slide_bounds()
        return len(dense.analyzer.slide.cells_in(Rect(x0, y0, x1, y1), white_only=True))

    result = _scanner(dense, target_wbc=100).run(analyse)
    assert result.stop_reason == "target_reached"
    assert result.wbc_found >= 100
    assert [f.index for f in fields] == list(range(len(fields)))
    assert result.analysed_bounds() == [f.slide_bounds() for f in fields]

    matched = mirrored = total = 0
    for field in fields:
        h = field.image.shape[0]
        # the coordinate round trip is exact
        sx, sy = field.to_slide(123.0, 456.0)
        assert field.to_pixel(sx, sy) == pytest.approx((123.0, 456.0))
        for px, py, r in _white_cells(dense, field):
            total += 1
            matched += _nucleus_pixels(field.image, px, py, r) > 40
            mirrored += _nucleus_pixels(field.image, px, h - py, r) > 40
        # the field's focus is the slide's, and its stage position is the one reported
        assert abs(dense.focus_error_um(field.captured_at)) <= 0.5
        truth = dense.camera.positions[field.captured_at]
        assert (truth.x_um, truth.y_um) == pytest.approx((field.x_um, field.y_um), abs=0.51)
    assert total >= 20
    assert matched == total
    # a wrong convention (image y flipped) would not match: the check can fail
    assert mirrored < total / 2


def test_fields_tile_the_monolayer_with_the_configured_overlap(dense: SimRig) -> None:
    result = _scanner(dense, target_wbc=100, field_overlap=0.1).run(lambda f: 5)
    fields = result.analysed
    assert len(fields) >= 10
    slide = dense.analyzer.slide
    for f in fields:
        assert slide.zone_at(f.x_um, f.y_um) == "monolayer"
        assert f.focus_images >= 3
    for a, b in itertools.combinations(fields, 2):
        ax0, ay0, ax1, ay1 = a.bounds
        bx0, by0, bx1, by1 = b.bounds
        overlap_x = max(0.0, min(ax1, bx1) - max(ax0, bx0)) / (ax1 - ax0)
        overlap_y = max(0.0, min(ay1, by1) - max(ay0, by0)) / (ay1 - ay0)
        assert min(overlap_x, overlap_y) <= 0.1 + 1e-6


def test_next_field_is_captured_while_the_last_is_analysed(dense: SimRig) -> None:
    overlapped = []
    with _scanner(dense, target_wbc=100).start() as scan:
        for field in scan:
            if field.index < 3:
                # hold this field until the scanner has captured another one
                deadline = time.monotonic() + 30.0
                while time.monotonic() < deadline:
                    if len(scan.result.fields) > field.index + 1:
                        overlapped.append(field.index)
                        break
                    time.sleep(0.02)
            scan.report(field, 30)
    assert overlapped == [0, 1, 2]
    assert scan.result.stop_reason == "target_reached"


def test_cancel_ends_the_scan_with_what_it_had(dense: SimRig) -> None:
    token = CancelToken()
    seen = []
    with pytest.raises(ScanCancelled) as info, _scanner(dense).start(token) as scan:
        for field in scan:
            seen.append(field.index)
            scan.report(field, 1)
            if field.index == 1:
                token.cancel("operator pressed stop")
    result = info.value.result
    assert result is not None
    assert result.stop_reason == "cancelled"
    assert "operator pressed stop" in str(info.value)
    assert len(result.analysed) >= 2
    assert seen[:2] == [0, 1]


@pytest.mark.parametrize("fault", ["limit_alarm", "unplugged"])
def test_a_stage_fault_stops_the_scan_with_what_was_scanned(fault: str) -> None:
    with sim_rig(5) as rig:
        scanner = _scanner(rig)
        with pytest.raises(ScanError) as info, scanner.start() as scan:
            for field in scan:
                scan.report(field, 1)
                if field.index == 1:
                    if fault == "limit_alarm":
                        rig.analyzer.controller.faults.alarm(1)  # a hard limit switch trips
                    else:
                        rig.analyzer.controller.unplug()
        error = info.value
        assert not isinstance(error, ScanCancelled)
        assert "\n" not in str(error)
        if fault == "limit_alarm":
            assert "hardware error" in str(error)
        assert error.result is not None
        assert error.result.stop_reason == "error"
        assert len(error.result.analysed) >= 2
        assert error.result.wbc_found >= 2


def test_a_slide_without_smear_gives_no_fields() -> None:
    with sim_rig(6) as rig:
        area = {"x_min_um": 52_000, "x_max_um": 60_000, "y_min_um": 4_000, "y_max_um": 21_000}
        result = _scanner(rig, scan_area=area).run(lambda f: 1)
    assert result.stop_reason == "no_monolayer"
    assert result.fields == ()
    assert {s.kind for s in result.survey} == {"empty"}
    assert result.illumination is not None


def test_focus_is_always_approached_from_below() -> None:
    with sim_rig(7) as rig:
        rig_ = Rig(
            rig.stage,
            rig.camera,
            width=rig.camera_config.width,
            height=rig.camera_config.height,
            analogue_gain=1.0,
            backlash_um=10.0,
            z_min_um=0.0,
            cancel=CancelToken(),
        )
        start = len(rig.analyzer.controller.received_lines())
        for x, z in (
            (30_000, 2500),
            (30_000, 2503),
            (30_000, 2498),
            (31_000, 2501),
            (32_000, 2490),
        ):
            rig_.goto(x, 12_000, z)
        zs = _z_targets(rig.analyzer.controller.received_lines()[start:])
    # down moves go 10 um under first; up moves (with or without XY) go straight
    assert zs == [2490, 2500, 2503, 2488, 2498, 2501, 2480, 2490]


def _z_targets(lines: list[str]) -> list[float]:
    """Z targets (um) of the G1 moves among the lines the controller received."""
    return [
        round(float(m.group(1)) * 1000.0, 3)
        for line in lines
        if line.startswith("G")
        for m in [re.search(r"Z(-?[0-9.]+)", line)]
        if m is not None
    ]


def test_scanner_refuses_an_area_outside_the_stage(dense: SimRig) -> None:
    from agent.errors import ConfigError

    area = {"x_min_um": 50_000, "x_max_um": 90_000, "y_min_um": 0, "y_max_um": 10_000}
    with pytest.raises(ConfigError, match="scan_area"):
        _scanner(dense, scan_area=area)


def test_report_of_an_unknown_field_is_refused(dense: SimRig) -> None:
    stop = threading.Event()
    with _scanner(dense, target_wbc=100).start() as scan:
        for field in scan:
            with pytest.raises(ValueError, match="no field 99"):
                scan.report(99, 1)
            scan.report(field, 1)
            with pytest.raises(ValueError, match="already reported"):
                scan.report(field, 1)
            scan.cancel("done")
            stop.set()
            break
    assert stop.is_set()


def test_calibration_on_a_configured_clear_place() -> None:
    with sim_rig(8) as rig:
        config = quick_config(
            max_fields=2,
            illumination={"position": {"x_um": 56_000, "y_um": 12_500}},
        )
        scanner = Scanner(rig.stage, rig.camera, config, rig.camera_config, rig.stage_config.limits)
        result = scanner.run(lambda f: 1)
        assert rig.analyzer.controller.led_level == 0  # switched off after the scan
    ill = result.illumination
    assert ill is not None
    target = config.illumination.target_background
    assert abs(ill.background.green - target) <= config.illumination.tolerance
    # white balance: clear glass comes out neutral
    assert abs(ill.background.red - ill.background.green) <= config.illumination.tolerance
    assert abs(ill.background.blue - ill.background.green) <= config.illumination.tolerance
    assert ill.background.fraction > 0.9  # it was glass
    assert len(result.fields) == 2
    assert result.analysed

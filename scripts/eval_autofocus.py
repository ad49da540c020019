#!/usr/bin/env python3
"""Autofocus and scan timing on the simulated analyzer, slide by slide.

Runs the production scan (the GRBL driver over the virtual controller's pty, the
virtual camera, survey, calibration, focus surface, local checks) on virtual slides
and compares every analysed field's true stage z (read from the virtual controller at
the capture) with the slide's true best focus. Prints, per slide: the share of fields
within half the depth of field (0.5 um) and within 1 um, the median and mean images
taken per field for focus, how fields were focused, and the time per field.

    .venv/bin/python scripts/eval_autofocus.py                  # seeds 1 2 3, real motion timing
    .venv/bin/python scripts/eval_autofocus.py --fast --seeds 1 2 3 4 5 --vary-optics

Analysis is instantaneous here (white cells are counted from the ground truth), so the
times are the acquisition's own: stage motion, capture, focusing and survey.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.acquisition.config import AcquisitionConfig  # noqa: E402
from agent.acquisition.field import FieldImage  # noqa: E402
from agent.acquisition.scanner import Scanner, ScanResult  # noqa: E402
from drivers.camera.config import CameraConfig  # noqa: E402
from drivers.camera.factory import open_camera  # noqa: E402
from drivers.sim.analyzer import SimulatedAnalyzer  # noqa: E402
from drivers.sim.config import OpticsConfig, SimulatorConfig  # noqa: E402
from drivers.sim.controller_config import FAST_TIMING, VirtualControllerConfig  # noqa: E402
from drivers.sim.smear import Rect  # noqa: E402
from drivers.sim.truth_camera import TruthRecordingCamera  # noqa: E402
from drivers.stage.config import StageConfig  # noqa: E402
from drivers.stage.factory import build_stage  # noqa: E402

HALF_DEPTH_OF_FIELD_UM = 0.5

VARIED_OPTICS = [
    {},
    {"focus_tilt_x_um_per_mm": 4.0, "focus_tilt_y_um_per_mm": 2.5, "focus_bow_um": 8.0},
    {"focus_tilt_x_um_per_mm": -2.5, "focus_tilt_y_um_per_mm": -3.0, "focus_bow_um": -6.0},
]
"""With --vary-optics, slide n gets entry n % 3: tilted and bowed differently."""


@dataclass
class SlideReport:
    seed: int
    result: ScanResult
    errors: list[float]
    wall_s: float


def run_slide(
    seed: int,
    acquisition: AcquisitionConfig,
    timing: VirtualControllerConfig,
    optics: dict[str, float],
) -> SlideReport:
    stage_config = StageConfig(port="simulator")
    if timing is FAST_TIMING:
        stage_config = stage_config.model_copy(
            update={"xy_feed_mm_min": 12_000.0, "z_feed_mm_min": 3_000.0}
        )
    camera_config = CameraConfig(type="simulated")
    sim_config = SimulatorConfig(seed=seed, controller=timing, optics=OpticsConfig(**optics))
    with SimulatedAnalyzer(sim_config, camera_config, stage_config.limits) as analyzer:
        stage = build_stage(stage_config, simulator_port=analyzer.port_path)
        stage.connect()
        stage.home()
        camera = TruthRecordingCamera(open_camera(camera_config, analyzer), analyzer)
        errors: list[float] = []

        def analyse(field: FieldImage) -> int:
            p = camera.positions[field.captured_at]
            errors.append(p.z_um - analyzer.best_focus_z(p.x_um, p.y_um))
            x0, y0, x1, y1 = field.slide_bounds()
            return len(analyzer.slide.cells_in(Rect(x0, y0, x1, y1), white_only=True))

        try:
            scanner = Scanner(stage, camera, acquisition, camera_config, stage_config.limits)
            start = time.monotonic()
            result = scanner.run(analyse)
            wall = time.monotonic() - start
        finally:
            camera.close()
            stage.close()
    return SlideReport(seed, result, errors, wall)


def describe(report: SlideReport) -> list[str]:
    r = report.result
    t = r.timing
    analysed = r.analysed
    images = [f.focus_images for f in analysed]
    errors = [abs(e) for e in report.errors]
    scan_s = t.total_s - t.survey_s - t.calibration_s
    per_field = scan_s / len(r.fields) if r.fields else float("nan")
    methods = Counter(f.focus_method or "skipped" for f in r.fields)
    statuses = Counter(f.status for f in r.fields)
    in_dof = sum(e <= HALF_DEPTH_OF_FIELD_UM for e in errors) / len(errors) if errors else 0.0
    in_1um = sum(e <= 1.0 for e in errors) / len(errors) if errors else 0.0
    return [
        f"slide seed {report.seed}: stop {r.stop_reason}, {r.wbc_found} white cells, "
        f"{len(analysed)} fields analysed of {len(r.fields)} captured "
        f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})",
        f"  in focus (|dz| <= {HALF_DEPTH_OF_FIELD_UM} um): {in_dof:.1%}   within 1 um: {in_1um:.1%}"
        f"   worst |dz| {max(errors, default=0.0):.2f} um   median |dz| "
        f"{statistics.median(errors) if errors else 0.0:.2f} um",
        f"  images per field for focus: median {statistics.median(images) if images else 0:g}, "
        f"mean {statistics.fmean(images) if images else 0:.2f}   methods: "
        + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())),
        f"  time per field {per_field:.2f} s (scan phase {scan_s:.1f} s / {len(r.fields)} fields)"
        f"   survey {t.survey_s:.1f} s ({len(r.survey)} points)   calibration {t.calibration_s:.1f} s"
        f"   total {t.total_s:.1f} s",
        f"  split: moving {t.moving_s:.1f} s, capturing {t.capturing_s:.1f} s, "
        f"processing {t.processing_s:.1f} s, waiting on analysis {t.waiting_s:.1f} s; "
        f"{t.images} images; focus surface {r.surface.kind}, rms {r.surface.rms_um:.2f} um",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-fields", type=int, default=None, help="cap on fields per slide")
    parser.add_argument(
        "--fast", action="store_true", help="a 20x faster virtual stage (accuracy only)"
    )
    parser.add_argument(
        "--vary-optics", action="store_true", help="tilt and bow each slide differently"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    values: dict[str, object] = {}
    if args.max_fields:
        values["max_fields"] = args.max_fields
    acquisition = AcquisitionConfig.model_validate(values)
    timing = FAST_TIMING if args.fast else VirtualControllerConfig()
    print(
        f"autofocus on the simulated analyzer: {'fast' if args.fast else 'real'} motion timing, "
        f"target {acquisition.target_wbc} white cells, default acquisition config"
    )
    reports = []
    for i, seed in enumerate(args.seeds):
        optics = VARIED_OPTICS[i % len(VARIED_OPTICS)] if args.vary_optics else {}
        report = run_slide(seed, acquisition, timing, optics)
        reports.append(report)
        if optics:
            print(f"slide seed {seed} optics: {optics}")
        for line in describe(report):
            print(line, flush=True)
    all_errors = [abs(e) for r in reports for e in r.errors]
    all_images = [f.focus_images for r in reports for f in r.result.analysed]
    if all_errors:
        rate = sum(e <= HALF_DEPTH_OF_FIELD_UM for e in all_errors) / len(all_errors)
        print(
            f"all slides: {len(all_errors)} fields, in focus {rate:.1%}, images per field "
            f"median {statistics.median(all_images):g} mean {statistics.fmean(all_images):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

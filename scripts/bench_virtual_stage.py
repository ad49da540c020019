#!/usr/bin/env python3
"""Timings of the GRBL driver on the virtual controller with the default timing model.

Shows that wall-clock moves match the motion model (which the tests check analytically),
what one command round trip costs over the pseudo-terminal, and how cheap the
simulator's ``true_position()`` is for the virtual camera. Run: ``.venv/bin/python
scripts/bench_virtual_stage.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.serial_link import SerialLink  # noqa: E402
from drivers.sim.controller_config import VirtualControllerConfig  # noqa: E402
from drivers.sim.motion import AxisKinematics, move_duration  # noqa: E402
from drivers.sim.virtual_grbl import VirtualGrblController  # noqa: E402
from drivers.stage.config import StageConfig  # noqa: E402
from drivers.stage.grbl import GrblStage  # noqa: E402


def _timed(action: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    timing = VirtualControllerConfig()
    kin = AxisKinematics(
        max_speed=(timing.xy_max_speed_mm_s, timing.xy_max_speed_mm_s, timing.z_max_speed_mm_s),
        accel=(timing.xy_accel_mm_s2, timing.xy_accel_mm_s2, timing.z_accel_mm_s2),
    )
    config = StageConfig(port="simulator")
    with VirtualGrblController(timing) as controller:
        stage = GrblStage(SerialLink(controller.port_path), config)
        connect = _timed(stage.connect, 1)[0]
        home = _timed(stage.home, 1)[0]
        stage.set_led(700)
        rows = [("connect (soft reset, banner, $$, ?)", connect, None)]
        rows.append(("home from power-on position (2, 2, 0.5) mm", home, None))
        for label, start, end, move in (
            ("10 mm X move + wait_idle", (0, 0, 0), (10, 0, 0), lambda: stage.move_to(x_um=10_000)),
            ("1 mm Z move + wait_idle", (10, 0, 0), (10, 0, 1), lambda: stage.move_to(z_um=1_000)),
            ("0.5 mm X step + wait_idle", (10, 0, 1), (10.5, 0, 1), lambda: stage.move_by(500)),
        ):
            model = move_duration(start, end, kin) + timing.settle_s
            rows.append((label, _timed(move, 1)[0], model))
        status = _timed(stage.position, 200)
        led = _timed(lambda: stage.set_led(700), 100)
        stage.close()
        truth = _timed(controller.true_position, 20_000)
    print(f"{'operation':48s} {'measured':>10s} {'model':>10s}")
    for label, measured, model in rows:
        model_text = f"{model:9.3f}s" if model is not None else "         -"
        print(f"{label:48s} {measured:9.3f}s {model_text}")
    print(
        f"{'position() round trip (median of 200)':48s} "
        f"{statistics.median(status) * 1e3:8.2f}ms  p99 {sorted(status)[197] * 1e3:.2f}ms"
    )
    print(f"{'set_led() round trip (median of 100)':48s} {statistics.median(led) * 1e3:8.2f}ms")
    print(f"{'true_position() (median of 20000)':48s} {statistics.median(truth) * 1e6:8.2f}us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

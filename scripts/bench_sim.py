#!/usr/bin/env python3
"""Time the simulated analyzer's rendering: slide fields, camera captures, frame server.

Cold = a field the slide has not rendered yet (its tiles are generated); warm = a field
already in the tile cache (what autofocus sees when it captures one field at many z).
Fields step along x by one field width, as a scan does.

Usage: scripts/bench_sim.py [--fields N] [--width 2028] [--height 1520] [--cells DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.camera.base import CameraSettings  # noqa: E402
from drivers.camera.simulated import SimulatedCameraClient  # noqa: E402
from drivers.sim.camera_model import ManualStage, VirtualCamera  # noqa: E402
from drivers.sim.config import SimulatorConfig  # noqa: E402
from drivers.sim.frame_server import FrameServer  # noqa: E402
from drivers.sim.slide import VirtualSlide  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def report(name: str, samples: list[float]) -> None:
    s = sorted(samples)
    p90 = s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]
    print(f"{name:<44} median {statistics.median(s):7.1f} ms   p90 {p90:7.1f} ms   (n={len(s)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--width", type=int, default=2028)
    parser.add_argument("--height", type=int, default=1520)
    parser.add_argument("--cells", type=Path, default=None)
    args = parser.parse_args()
    w, h, n = args.width, args.height, args.fields
    config = SimulatorConfig(cell_library=args.cells)
    start = time.perf_counter()
    slide = VirtualSlide(config)
    print(f"slide set-up: {(time.perf_counter() - start) * 1000:.0f} ms")
    field_um = w * slide.pixel_size_um
    x0, y0 = slide.monolayer_core().x0 + 2000, slide.monolayer_core().centre[1]
    # Warm up imports, the sprite bank and the first cell cut-outs away from the measured area.
    slide.render(x0 - 5000, y0, w, h)

    xs = [x0 + i * field_um for i in range(n)]
    report("slide field render, cold", [timed(lambda x=x: slide.render(x, y0, w, h)) for x in xs])
    report("slide field render, warm", [timed(lambda x=x: slide.render(x, y0, w, h)) for x in xs])

    stage = ManualStage(led_level=700)
    cam = VirtualCamera(slide, stage, config.optics, width=w, height=h)
    cam.configure(CameraSettings(w, h, exposure_us=5000))
    stage.move_to(x0 - 5000, y0, 2500.0)
    cam.capture()
    y1 = y0 + 2 * h * slide.pixel_size_um

    def cold_capture(x: float) -> float:
        stage.move_to(x, y1, cam.best_focus_z(x, y1))
        return timed(cam.capture)

    report("camera capture, new field (cold tiles)", [cold_capture(x) for x in xs])

    def warm_capture(x: float, dz: float) -> float:
        stage.move_to(x, y1, cam.best_focus_z(x, y1) + dz)
        return timed(cam.capture)

    report("camera capture, same field in focus", [warm_capture(xs[0], 0.0) for _ in range(n)])
    report(
        "camera capture, same field 3 um off focus", [warm_capture(xs[0], 3.0) for _ in range(n)]
    )
    report(
        "camera capture, same field 30 um off focus", [warm_capture(xs[0], 30.0) for _ in range(n)]
    )

    with tempfile.TemporaryDirectory() as tmp:
        served = VirtualCamera(slide, stage, config.optics, width=w, height=h)
        with FrameServer(served, f"unix://{tmp}/cam.sock") as server:
            client = SimulatedCameraClient(server.address, open_timeout_s=5, capture_timeout_s=30)
            client.capture()
            local = [timed(served.capture) for _ in range(n)]
            remote = [timed(client.capture) for _ in range(n)]
            client.close()
    report("frame server capture (unix socket), warm", remote)
    report("  same captures in-process", local)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Autofocus acceptance on the simulated analyzer: in focus on >= 95% of fields, ~3 images each.

Three virtual slides (three seeds, each tilted and bowed differently) scanned with
the production code path: the GRBL driver over the virtual controller's pty, the
virtual camera, the survey, the focus surface and the local checks. A field is in
focus when the stage's true z (read from the virtual controller at the capture, not
what the scanner believes) lies within half the depth of field (0.5 um) of the
slide's true best focus there. ``scripts/eval_autofocus.py`` prints the same numbers
with the real motion timing.
"""

from __future__ import annotations

import statistics

import pytest

from agent.acquisition.scanner import Scanner
from tests.acquisition_sim import quick_config, sim_rig

# Three scans of ~40 fields on the virtual slide, 20-30 s each.
pytestmark = pytest.mark.slow

HALF_DEPTH_OF_FIELD_UM = 0.5
FIELDS = 40

SLIDES = [
    (1, {}),
    (2, {"focus_tilt_x_um_per_mm": 4.0, "focus_tilt_y_um_per_mm": 2.5, "focus_bow_um": 8.0}),
    (3, {"focus_tilt_x_um_per_mm": -2.5, "focus_tilt_y_um_per_mm": -3.0, "focus_bow_um": -6.0}),
]


@pytest.mark.parametrize(("seed", "optics"), SLIDES, ids=[f"seed{s}" for s, _ in SLIDES])
def test_autofocus_lands_within_the_depth_of_field(seed: int, optics: dict[str, float]) -> None:
    from drivers.sim.config import OpticsConfig

    with sim_rig(seed, optics=OpticsConfig(**optics)) as rig:
        scanner = Scanner(
            rig.stage,
            rig.camera,
            quick_config(
                max_fields=FIELDS,
                target_wbc=500,
                # the slides below tilt by up to 4 um/mm: the operator's setting says so
                focus={"initial_range_um": 120.0, "max_tilt_um_per_mm": 4.0},
            ),
            rig.camera_config,
            rig.stage_config.limits,
        )
        errors: list[float] = []
        images: list[int] = []

        def analyse(field: object) -> int:
            errors.append(rig.focus_error_um(field.captured_at))  # type: ignore[attr-defined]
            images.append(field.focus_images)  # type: ignore[attr-defined]
            return 1

        result = scanner.run(analyse)  # type: ignore[arg-type]
    assert result.stop_reason == "max_fields"
    assert len(errors) >= FIELDS // 2
    in_focus = sum(abs(e) <= HALF_DEPTH_OF_FIELD_UM for e in errors) / len(errors)
    assert in_focus >= 0.95, sorted(errors, key=abs)[-5:]
    assert statistics.median(images) <= 3
    # the survey's fields were focused too (those with something to focus on)
    focused = [s for s in result.survey if s.focus_ok]
    assert len(focused) >= len(result.survey) // 2

"""Shared builders for the report, store, FHIR and dedup tests: real images, real geometry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from agent.acquisition.field import FieldImage
from agent.config import AgentConfig, parse_config
from agent.report.dedup import Box, FieldCell, FieldGeometry
from agent.report.model import Report, Timings
from agent.report.service import ReportService
from agent.vision.model_card import InputSpec, ModelCard

CLASS_BGR = {
    "neutrophil": (180, 100, 160),
    "lymphocyte": (150, 60, 90),
    "monocyte": (170, 120, 150),
    "eosinophil": (90, 120, 220),
    "basophil": (120, 40, 80),
    "ig": (160, 90, 140),
    "erythroblast": (110, 60, 110),
    "platelet": (160, 120, 170),
    "unidentified": (140, 140, 140),
}


def make_config(state_dir: Path, extra: str = "") -> AgentConfig:
    text = f"device_id: test-01\nstorage:\n  state_dir: {state_dir}\n{extra}"
    return parse_config(text, "test.yaml", environ={})


class Clock:
    """A UTC clock that advances one second per reading, so timestamps differ and are known."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def model_cards() -> list[ModelCard]:
    spec = InputSpec(
        name="input", shape=[1, 3, 96, 96], color="RGB", pixel_size_um=0.2, normalization={}
    )
    return [
        ModelCard(
            name="wbc-detector",
            version="1.0.0",
            task="detection",
            file="detector.onnx",
            sha256="a" * 64,
            labels=["cell"],
            input=spec,
            opset=17,
        ),
        ModelCard(
            name="wbc-classifier",
            version="1.2.0",
            task="classification",
            file="classifier.onnx",
            sha256="b" * 64,
            labels=["neutrophil", "lymphocyte"],
            input=spec,
            opset=17,
        ),
    ]


def geometry(
    index: int, x_um: float, y_um: float, w: int = 320, h: int = 240, px: float = 0.5
) -> FieldGeometry:
    return FieldGeometry(
        index=index, x_um=x_um, y_um=y_um, width_px=w, height_px=h, pixel_size_um=px
    )


def slide_box_to_px(field: FieldGeometry, box_um: Box) -> Box:
    """The box (px) a slide box (um) has in ``field``'s image, clipped to the image."""
    bx0, by0, _, _ = field.slide_bounds()
    ps = field.pixel_size_um
    x0 = max(0.0, (box_um[0] - bx0) / ps)
    y0 = max(0.0, (box_um[1] - by0) / ps)
    x1 = min(float(field.width_px), (box_um[2] - bx0) / ps)
    y1 = min(float(field.height_px), (box_um[3] - by0) / ps)
    return (x0, y0, x1, y1)


def fcell(box: Box, label: str = "neutrophil", confidence: float = 0.9) -> FieldCell:
    return FieldCell(
        box_px=box,
        label=label,
        top_label=label,
        confidence=confidence,
        probabilities={label: confidence},
    )


def field_image(
    index: int,
    x_um: float,
    y_um: float,
    cells: Sequence[tuple[Box, str]] = (),
    w: int = 320,
    h: int = 240,
    px: float = 0.5,
    focus_ok: bool = True,
) -> FieldImage:
    """A smear-like field: pink background, each cell a purple disc in its box."""
    image = np.full((h, w, 3), (200, 190, 230), np.uint8)
    for (x0, y0, x1, y1), label in cells:
        centre = (round((x0 + x1) / 2), round((y0 + y1) / 2))
        radius = max(2, round(min(x1 - x0, y1 - y0) / 2) - 1)
        cv2.circle(image, centre, radius, CLASS_BGR.get(label, (0, 0, 0)), -1)
    return FieldImage(
        index=index,
        image=image,
        x_um=x_um,
        y_um=y_um,
        z_um=100.0,
        pixel_size_um=px,
        focus_score=1.0,
        focus_ok=focus_ok,
        captured_at=0.0,
    )


TIMINGS = Timings(total_s=180.0, acquisition_s=120.0, analysis_s=50.0, waiting_s=10.0)


def run_sample(
    service: ReportService,
    sample_id: str,
    labels: Sequence[str],
    *,
    accession: str | None = None,
    target_wbc: int = 100,
    per_field: int = 24,
    out_of_focus: Sequence[int] = (),
    truth: dict[str, int] | None = None,
    hardware_faults: Sequence[str] = (),
) -> Report:
    """Scan ``labels`` laid out on a grid of non-overlapping fields and finish the sample."""
    run = service.begin_sample(sample_id, accession=accession, target_wbc=target_wbc)
    chunks = [labels[i : i + per_field] for i in range(0, len(labels), per_field)] or [[]]
    for index, chunk in enumerate(chunks):
        cells: list[tuple[Box, str]] = []
        for k, label in enumerate(chunk):
            x = 12 + (k % 8) * 38
            y = 12 + (k // 8) * 38
            cells.append(((x, y, x + 26, y + 26), label))
        image = field_image(index, 200.0 * index, 0.0, cells, focus_ok=index not in out_of_focus)
        run.add_field(image, [fcell(box, label) for box, label in cells])
    return run.finish(TIMINGS, hardware_faults=hardware_faults, truth=truth)


def differential_labels(counts: dict[str, int]) -> list[str]:
    return [label for label, n in counts.items() for _ in range(n)]

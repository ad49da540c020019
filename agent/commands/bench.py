"""``algocyte-agent bench``: measure model speed on this board.

Needs no data set: the field is drawn (``agent.vision.synthetic_field``) at the camera's
size and the reference scale, the cells are its white cells. Times are the whole
``detect()`` / ``classify_at()`` calls (resampling, cropping, inference, decoding),
median of ``--repeats`` runs after one warm-up, with 1 onnxruntime thread and with all.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import onnxruntime as ort

from agent.commands.common import load_selected_config
from agent.errors import AnalyzerError
from agent.vision.classifier import CellClassifier
from agent.vision.detector import CellDetector
from agent.vision.synthetic_field import synthetic_field

_log = logging.getLogger(__name__)

FIELD_SIZE = (2028, 1520)
PIXEL_SIZE_UM = 0.2
CELLS_PER_BATCH = 16


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="measure detector and classifier latency on this machine",
        description=(
            "Time the installed models on synthetic input with 1 thread and with all threads, "
            "so an engineer bringing up a new board can see what a field and a cell cost."
        ),
    )
    p.add_argument(
        "--repeats", type=int, default=5, metavar="N", help="timed runs per measurement (default 5)"
    )
    p.set_defaults(func=execute)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _thread_settings() -> list[tuple[str, int]]:
    cores = os.cpu_count() or 1
    return [("1 thread", 1), (f"all {cores} threads", 0)]


def _bench_detector(models_dir: Path | None, repeats: int) -> list[str]:
    field, _ = synthetic_field(*FIELD_SIZE, pixel_size_um=PIXEL_SIZE_UM)
    lines: list[str] = []
    for name, threads in _thread_settings():
        detector = CellDetector.load(models_dir, threads)
        if not lines:
            lines.append(
                f"detector {detector.card.version} ({detector.card.file}): one "
                f"{FIELD_SIZE[0]}x{FIELD_SIZE[1]} px field at {PIXEL_SIZE_UM} um/px"
            )
        ms = median_ms(partial(detector.detect, field, PIXEL_SIZE_UM), repeats)
        lines.append(f"  {name:<16} {ms:8.1f} ms per field")
    return lines


def _bench_classifier(models_dir: Path | None, repeats: int) -> list[str]:
    field, centres = synthetic_field(
        *FIELD_SIZE, pixel_size_um=PIXEL_SIZE_UM, white_cells=CELLS_PER_BATCH
    )
    lines: list[str] = []
    for name, threads in _thread_settings():
        classifier = CellClassifier.load(models_dir, threads)
        if not lines:
            card = classifier.card
            lines.append(
                f"classifier {card.version} ({card.file}): cells cut from the field, "
                f"one at a time and {CELLS_PER_BATCH} per call"
            )
        one = median_ms(partial(classifier.classify_at, field, centres[:1], PIXEL_SIZE_UM), repeats)
        many = median_ms(partial(classifier.classify_at, field, centres, PIXEL_SIZE_UM), repeats)
        lines.append(
            f"  {name:<16} {one:8.1f} ms for 1 cell, {many / len(centres):8.1f} ms per cell "
            f"in a batch of {len(centres)}"
        )
    return lines


def execute(args: argparse.Namespace) -> int:
    config = load_selected_config(args, fallback="embedded")
    if args.repeats < 1:
        raise AnalyzerError("--repeats must be at least 1")
    models_dir = config.vision.models_dir
    sys.stdout.write(
        f"algocyte-agent bench: {os.cpu_count()} CPU cores, onnxruntime {ort.__version__}, "
        f"median of {args.repeats} runs\n"
    )
    failed = False
    for bench in (_bench_detector, _bench_classifier):
        try:
            lines = bench(models_dir, args.repeats)
        except AnalyzerError as e:
            sys.stderr.write(f"algocyte-agent: error: {e}\n")
            failed = True
            continue
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0

"""``algocyte-agent analyze``: detect and classify every cell in field images.

With ``--json`` stdout carries exactly one JSON object per analysed image, one per
line, ``{"path": str, "cells": [{"bbox": [x0, y0, x1, y1], "label": str, "top_label":
str, "confidence": float}]}``, boxes in the input image's pixels; tools outside the
project parse it. Problems with single files go to stderr and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from agent.commands.common import load_selected_config
from agent.commands.image_inputs import image_inputs, read_image
from agent.errors import InputError
from agent.vision.field_analysis import CellFinding, FieldAnalyzer

_log = logging.getLogger(__name__)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="detect and classify the cells in whole field images",
        description=(
            "Detect and classify every white cell in whole smear field images. Directories are "
            "searched recursively for .jpg/.jpeg/.png/.bmp/.tif files. Unreadable files are "
            "reported on stderr and skipped; the exit status is non-zero if any file failed."
        ),
    )
    p.add_argument(
        "--pixel-size",
        type=float,
        default=0.2,
        metavar="UM",
        help="micrometres per pixel of the images (default 0.2, the reference scale)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or directories")
    p.set_defaults(func=execute)


def cell_record(finding: CellFinding) -> dict[str, object]:
    return {
        "bbox": [round(v, 2) for v in finding.bbox],
        "label": finding.call.label,
        "top_label": finding.call.top_label,
        "confidence": round(float(finding.call.confidence), 4),
    }


def summary_lines(path: Path, findings: Sequence[CellFinding]) -> list[str]:
    counts = Counter(f.call.label for f in findings)
    tally = ", ".join(f"{label} {n}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines = [
        f"{path}: {len(findings)} cell{'s' if len(findings) != 1 else ''}"
        + (f" ({tally})" if tally else "")
    ]
    for f in findings:
        x0, y0, x1, y1 = f.bbox
        note = "" if f.call.label == f.call.top_label else f" (top: {f.call.top_label})"
        edge = ", cut by the image edge" if f.cut_by_border else ""
        lines.append(
            f"  {f.call.label:<14} {f.call.confidence:5.1%}{note}  box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}){edge}"
        )
    return lines


def execute(args: argparse.Namespace) -> int:
    config = load_selected_config(args, fallback="embedded")
    pixel_size = float(args.pixel_size)
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise InputError(
            f"--pixel-size must be a positive number of micrometres, got {args.pixel_size}"
        )
    analyzer = FieldAnalyzer.load(config.vision.models_dir, config.vision.threads)
    failed = 0
    analysed = 0
    for path in image_inputs(args.paths):
        try:
            if isinstance(path, InputError):
                raise path  # a named path that does not exist
            findings = analyzer.analyze(read_image(path), pixel_size)
        except InputError as e:
            message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
            sys.stderr.write(f"algocyte-agent: error: {message}\n")
            failed += 1
            continue
        analysed += 1
        if args.json:
            record = {"path": str(path), "cells": [cell_record(f) for f in findings]}
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            sys.stdout.write("\n".join(summary_lines(path, findings)) + "\n")
        sys.stdout.flush()
    if analysed == 0 and failed == 0:
        sys.stderr.write("algocyte-agent: error: no images found\n")
        return 1
    return 1 if failed else 0

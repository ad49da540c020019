"""``algocyte-agent classify``: name the cell in each single-cell image.

Output is parsed by tools outside the project: with ``--json`` one object per line,
``{"path", "label", "top_label", "confidence", "probabilities"}``; without it an aligned
table. A file that cannot be read is reported on stderr and skipped, the others are
still classified, and the exit status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agent.commands.common import load_selected_config
from agent.commands.image_inputs import image_inputs, read_image
from agent.errors import InputError
from agent.vision.classifier import CellCall, CellClassifier
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

CHUNK = 32
"""Images decoded and classified together: bounds memory on large directories."""
EXIT_FILE_ERRORS = 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "classify",
        parents=[common],
        help="classify single-cell images",
        description=(
            "Classify images each centred on one cell. Directories are searched recursively "
            "for .jpg/.jpeg/.png/.bmp/.tif files. Unreadable files are reported on stderr and "
            "skipped; the exit status is non-zero if any file failed."
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


def _json_line(path: Path, call: CellCall) -> str:
    return json.dumps(
        {
            "path": str(path),
            "label": call.label,
            "top_label": call.top_label,
            "confidence": round(call.confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in call.probabilities.items()},
        }
    )


class _Table:
    """Aligned rows printed as they come (column widths fixed by the label set)."""

    def __init__(self, out: TextIO, labels: Sequence[str]) -> None:
        self._out = out
        self._width = max(len(x) for x in [*labels, "unidentified", "label"])
        self._header = False

    def row(self, path: Path, call: CellCall) -> None:
        w = self._width
        if not self._header:
            self._out.write(f"{'label':<{w}}  {'conf':>6}  {'top label':<{w}}  path\n")
            self._header = True
        self._out.write(
            f"{call.label:<{w}}  {call.confidence:6.3f}  {call.top_label:<{w}}  {path}\n"
        )


def execute(args: argparse.Namespace) -> int:
    config = load_selected_config(args, fallback="embedded")
    pixel_size = float(args.pixel_size)
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise InputError(
            f"--pixel-size must be a positive number of um per pixel, not {pixel_size}"
        )
    classifier = CellClassifier.load(config.vision.models_dir, threads=config.vision.threads)
    out = sys.stdout
    table = None if args.json else _Table(out, classifier.labels)
    failures = 0

    def fail(error: InputError) -> None:
        nonlocal failures
        failures += 1
        sys.stderr.write(f"algocyte-agent: error: {error}\n")

    def flush(batch: list[tuple[Path, BgrImage]]) -> None:
        calls: list[CellCall | None]
        try:
            calls = list(classifier.classify([image for _, image in batch], pixel_size))
        except InputError:
            # One bad image in the chunk: classify one by one to name it.
            calls = []
            for path, image in batch:
                try:
                    calls.extend(classifier.classify([image], pixel_size))
                except InputError as e:
                    fail(InputError(f"{path}: {e}"))
                    calls.append(None)
        for (path, _), call in zip(batch, calls, strict=True):
            if call is None:
                continue
            if table is None:
                out.write(_json_line(path, call) + "\n")
            else:
                table.row(path, call)
        out.flush()

    pending: list[tuple[Path, BgrImage]] = []
    try:
        for item in image_inputs(args.paths):
            if isinstance(item, InputError):
                fail(item)
                continue
            try:
                pending.append((item, read_image(item)))
            except InputError as e:
                fail(e)
                continue
            if len(pending) >= CHUNK:
                flush(pending)
                pending = []
        if pending:
            flush(pending)
    except BrokenPipeError:
        # The reader (e.g. ``| head``) went away: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0
    if failures:
        _log.info("%d file(s) could not be classified", failures)
        return EXIT_FILE_ERRORS
    return 0

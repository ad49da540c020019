"""``algocyte-agent analyze``: detect and classify every cell in field images."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.commands.common import load_selected_config
from agent.commands.pending import not_available


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="detect and classify the cells in whole field images",
        description=(
            "Detect and classify every white cell in whole smear field images. Directories are "
            "searched recursively. Unreadable files are reported on stderr and skipped; the exit "
            "status is non-zero if any file failed."
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


def execute(args: argparse.Namespace) -> int:
    load_selected_config(args, fallback="embedded")
    raise not_available("field analysis")

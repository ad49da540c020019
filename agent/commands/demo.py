"""``algocyte-agent demo``: one sample on the simulated analyzer, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.commands.common import load_selected_config
from agent.commands.pending import not_available


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="analyse one sample on the simulated analyzer and print the differential",
        description=(
            "Run one sample end to end on the simulated analyzer (virtual stage, slide and "
            "camera) with the shipped models, and print the differential. Uses the embedded "
            "simulator configuration unless --config is given."
        ),
    )
    p.add_argument(
        "--cells",
        type=Path,
        metavar="DIR",
        help="cell library for the virtual slide (one subfolder per class); default: the demo library",
    )
    p.add_argument("--target", type=int, metavar="N", help="white cells to count (100-500)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the virtual slide")
    p.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout, nothing else"
    )
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    load_selected_config(args, fallback="embedded")
    raise not_available("the end-to-end sample pipeline")
